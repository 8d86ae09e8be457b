"""Scenario "webhooks": deliveries a second from ackflow's worker to a local receiver, beside a ceiling.

Going through Temporal to make thousands of DONE events would measure Temporal (~25 workflows/s
here), so the backlog is made the way the relay's fan-out makes it: `fan_out_webhooks` (the same
SQL, for all N synthetic `request.done` events in one statement) with `webhook_body` (the same
bytes), for an endpoint registered through the API by a tenant of its own (so no other scenario's
endpoint gets any). All N go in one transaction: its commit fires the INSERT trigger's NOTIFY,
which is what wakes the worker's dispatcher in production. The rate is N over the time from just
before that commit to the receiver's last arrival; every delivery must also end `succeeded` in
Postgres.

The ceiling: the same receiver process, the same N bodies, POSTed by one plain httpx client with
the worker's concurrency (ACKFLOW_WEBHOOK_MAX_IN_FLIGHT): no database, no signing, no bookkeeping.

One worker process spends about a millisecond of CPU per delivery, so it tops out near 1,000/s
whatever the machine has spare. Workers share the deliveries (each claims with SKIP LOCKED), so the
backlog is drained once more by two worker processes: how the rate scales out.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from ackflow import devstack
from ackflow.contracts import DONE, TOPIC_FOR_STATUS
from ackflow.db.listen import WEBHOOKS_CHANNEL as DISPATCHER_CHANNEL
from ackflow.db.pool import connect
from ackflow.db.queries import sql
from ackflow.ids import new_request_id
from ackflow.settings import Settings
from ackflow.tenants import create_tenant
from ackflow.timestamps import wire_timestamp
from bench.cpu import cpu_seconds, cpu_spent
from bench.stack import Stack
from callbacks.fanout import webhook_body

TOPIC = TOPIC_FOR_STATUS[DONE]
POLL_SECONDS = 0.05
MIN_WAIT_SECONDS = 30.0
SECOND_WORKER = "worker-2"


class ReceiverProcess:
    """bench/receiver_process.py as a subprocess of the stack, and how to ask it what arrived."""

    def __init__(self, stack: Stack) -> None:
        self.port = devstack.free_port()
        self.url = f"http://{devstack.LOOPBACK}:{self.port}/hook"
        self._http = httpx.AsyncClient(base_url=f"http://{devstack.LOOPBACK}:{self.port}", trust_env=False)

    async def count(self) -> int:
        return int((await self._http.get("/count")).json())

    async def arrivals(self) -> dict[str, float]:
        return dict((await self._http.get("/arrivals")).json())

    async def wait_for(self, count: int, timeout: float) -> None:
        """Until the receiver has `count` distinct requests (or `timeout` seconds have passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.count() >= count:
                return
            await asyncio.sleep(POLL_SECONDS)

    async def aclose(self) -> None:
        await self._http.aclose()


@asynccontextmanager
async def running_receiver_process(stack: Stack) -> AsyncIterator[ReceiverProcess]:
    receiver = ReceiverProcess(stack)
    argv = [sys.executable, "-m", "bench.receiver_process"]
    stack.start("receiver", argv, {"BENCH_PORT": str(receiver.port)}, lambda: devstack.port_open(receiver.port))
    try:
        yield receiver
    finally:
        await receiver.aclose()
        stack.stop("receiver")


async def measure_webhook_rate(stack: Stack, deliveries: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Deliveries a second: ackflow's worker draining a backlog of `deliveries`, and the plain-httpx ceiling."""
    in_flight = Settings.from_env(stack.role_env()).webhook_max_in_flight
    async with running_receiver_process(stack) as receiver:
        tenant_id, endpoint_id = await _endpoint_of_new_tenant(stack, "bench-webhooks", receiver.url, in_flight)
        ackflow = await _ackflow(stack, receiver, tenant_id, endpoint_id, _events(deliveries))
        ceiling = await _ceiling(stack, receiver, _events(deliveries), in_flight)  # new ids: counted apart
        worker = [str(devstack.find_venv_binary("ackflow")), "worker"]
        stack.start(SECOND_WORKER, worker, stack.role_env(), lambda: True)
        try:
            await _until_dispatchers_listen(stack.database_url, 2)  # the second has booted
            tenant_id, endpoint_id = await _endpoint_of_new_tenant(stack, "bench-webhooks-2", receiver.url, in_flight)
            two_workers = await _ackflow(stack, receiver, tenant_id, endpoint_id, _events(deliveries))
        finally:
            stack.stop(SECOND_WORKER)
    ratio = ackflow["rate"] / ceiling["rate"] if ackflow["rate"] and ceiling["rate"] else None
    log(
        f"  {deliveries} deliveries at {in_flight} in flight: ackflow {_num(ackflow['rate'])}/s"
        f" ({ackflow['received']} received, {ackflow['succeeded']} succeeded),"
        f" plain httpx {_num(ceiling['rate'])}/s ({ceiling['errors']} errors); ratio {_num(ratio)}"
    )
    log(
        f"  CPU ms per delivery: ackflow {ackflow['cpu_ms_per_delivery']}, plain httpx {ceiling['cpu_ms_per_delivery']}"
    )
    log(
        f"  two worker processes: {_num(two_workers['rate'])}/s ({two_workers['succeeded']} succeeded);"
        f" CPU ms per delivery {two_workers['cpu_ms_per_delivery']}"
    )
    return {
        "deliveries": deliveries,
        "in_flight": in_flight,
        "ackflow": ackflow,
        "httpx": ceiling,
        "two_workers": two_workers,
        "ratio": None if ratio is None else round(ratio, 2),
    }


async def _until_dispatchers_listen(database_url: str, count: int) -> None:
    """Until `count` webhook dispatchers LISTEN for new deliveries (a worker process does once it runs)."""
    connection = await connect(database_url)
    query = "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE $1"
    try:
        deadline = time.monotonic() + MIN_WAIT_SECONDS
        while await connection.fetchval(query, f"LISTEN%{DISPATCHER_CHANNEL}%") < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {count} webhook dispatchers listen after {MIN_WAIT_SECONDS:.0f}s")
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await connection.close()


async def _endpoint_of_new_tenant(stack: Stack, name: str, url: str, in_flight: int) -> tuple[uuid.UUID, uuid.UUID]:
    """A tenant of its own (so no other scenario's endpoint gets a delivery) with one endpoint at `url`."""
    connection = await connect(stack.database_url)
    try:
        key = await create_tenant(connection, name)
    finally:
        await connection.close()
    return key.tenant_id, await _register_endpoint(stack, key.key, url, in_flight)


async def _register_endpoint(stack: Stack, api_key: str, url: str, in_flight: int) -> uuid.UUID:
    """One endpoint whose own limits never bind: as many concurrent sends as the worker makes, no rate limit."""
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, trust_env=False) as http:
        body = {"url": url, "event_types": [TOPIC], "max_concurrency": in_flight}
        response = await http.post("/v1/webhooks", json=body)
        response.raise_for_status()
        return uuid.UUID(response.json()["id"])


def _events(count: int) -> list[tuple[str, str]]:
    """(request id, webhook body) of `count` DONE events, shaped as the relay's fan-out sees them."""
    now = wire_timestamp(datetime.now(UTC))
    events = []
    for i in range(count):
        request_id = str(new_request_id())
        state = {
            "id": request_id,
            "kind": "echo",
            "status": DONE,
            "version": 3,
            "result": {"i": i},
            "error": None,
            "created_at": now,
            "updated_at": now,
            "completed_at": now,
        }
        events.append((request_id, webhook_body(TOPIC, now, state)))
    return events


async def _ackflow(
    stack: Stack, receiver: ReceiverProcess, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, events: list[tuple[str, str]]
) -> dict[str, Any]:
    connection = await connect(stack.database_url)
    try:
        # Real request_events ids (taken from its sequence), so they can never collide with a real event's.
        event_ids = await connection.fetch(
            "SELECT nextval(pg_get_serial_sequence('request_events', 'id')) FROM generate_series(1, $1)", len(events)
        )
        args = (
            [row[0] for row in event_ids],
            [TOPIC] * len(events),
            [tenant_id] * len(events),
            [uuid.UUID(rid) for rid, _ in events],
            [body for _, body in events],
        )
        before = await receiver.count()
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute(sql("fan_out_webhooks"), *args)  # all N events in one statement, as the relay does
        pids = {name: pid for name, pid in stack.pids().items() if name.startswith("worker")}
        pids |= {name: stack.pid(name) for name in ("postgres", "receiver")}
        cpu_before = cpu_seconds(pids)
        started = time.time()
        await transaction.commit()  # the trigger's NOTIFY goes out now and wakes the dispatcher
        await receiver.wait_for(before + len(events), _timeout(len(events)))
        arrivals = await receiver.arrivals()
        states = await _states_when_settled(connection, endpoint_id, len(events))
        cpu = cpu_spent(cpu_before, cpu_seconds(pids))  # every delivery recorded: the worker's whole cost
    finally:
        await connection.close()
    return _summary(started, arrivals, [rid for rid, _ in events]) | {
        "succeeded": states.get("succeeded", 0),
        "states": states,
        "cpu_ms_per_delivery": _per_delivery(cpu, len(events)),
    }


async def _states_when_settled(connection: asyncpg.Connection, endpoint_id: uuid.UUID, count: int) -> dict[str, int]:
    """Delivery states of the endpoint once all `count` are recorded succeeded (or after a timeout)."""
    deadline = time.monotonic() + _timeout(count)
    while True:
        rows = await connection.fetch(
            "SELECT state, count(*) FROM webhook_deliveries WHERE endpoint_id = $1 GROUP BY state", endpoint_id
        )
        states = {row[0]: row[1] for row in rows}
        if states.get("succeeded", 0) >= count or time.monotonic() > deadline:
            return states
        await asyncio.sleep(POLL_SECONDS)


async def _ceiling(
    stack: Stack, receiver: ReceiverProcess, events: list[tuple[str, str]], in_flight: int
) -> dict[str, Any]:
    """The same bodies, POSTed by `in_flight` concurrent senders over one httpx client."""
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    errors = 0
    pending = iter(events)
    before = await receiver.count()
    cpu_before = cpu_seconds({"receiver": stack.pid("receiver")}) | {"httpx": time.process_time()}
    async with httpx.AsyncClient(limits=limits, trust_env=False, timeout=30) as http:

        async def sender() -> None:
            nonlocal errors
            for _, body in pending:  # one shared iterator: each body is sent once
                try:
                    response = await http.post(receiver.url, content=body, headers={"content-type": "application/json"})
                    errors += not response.is_success
                except httpx.HTTPError:
                    errors += 1

        started = time.time()
        await asyncio.gather(*(sender() for _ in range(in_flight)))
    cpu = cpu_spent(cpu_before, cpu_seconds({"receiver": stack.pid("receiver")}) | {"httpx": time.process_time()})
    await receiver.wait_for(before + len(events), _timeout(len(events)))
    return _summary(started, await receiver.arrivals(), [rid for rid, _ in events]) | {
        "errors": errors,
        "cpu_ms_per_delivery": _per_delivery(cpu, len(events)),
    }


def _summary(started: float, arrivals: dict[str, float], request_ids: list[str]) -> dict[str, Any]:
    """Deliveries received, and the rate: all of them over the time from `started` to the last arrival."""
    times = [arrivals[rid] for rid in request_ids if rid in arrivals]
    elapsed = max(times) - started if times else None
    complete = len(times) == len(request_ids)
    return {
        "received": len(times),
        "seconds": None if elapsed is None else round(elapsed, 2),
        "first_ms": round((min(times) - started) * 1000, 1) if times else None,
        "rate": round(len(times) / elapsed, 1) if elapsed and complete else None,
    }


def _per_delivery(cpu: dict[str, float], count: int) -> dict[str, float]:
    """CPU milliseconds per delivery of each process (Postgres: all its backends)."""
    return {name: round(seconds * 1000 / count, 2) for name, seconds in cpu.items()}


def _timeout(count: int) -> float:
    return max(MIN_WAIT_SECONDS, count / 100)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}" if value < 10 else f"{value:.0f}"
