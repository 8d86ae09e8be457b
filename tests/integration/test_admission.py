"""Admission across tenants and relays, dead letters, and reconciling requests with their workflows,
on real Postgres and Temporal."""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis
from temporalio.client import Client
from temporalio.service import RPCError

from ackflow.contracts import TOPIC_BATCH
from ackflow.events import OutboxEvent
from ackflow.handlers import HandlerRegistry
from ackflow.roles import relay_routes
from ackflow.settings import Settings
from activities.worker import register_kinds
from outbox_cdc import DeadLetterLimits, OutboxRelay, Reconciler, WorkflowAdmission
from tests.conftest import Tenant, api_client, make_tenant, running_roles
from tests.helpers import assert_eventually, wait_for_status
from tests.integration.test_relay import accept_requests, executions_of, failing_once, in_flight, relaying, worker

__all__ = ["worker"]  # the fixture

ACKFLOW = str(Path(sys.executable).parent / "ackflow")


def relay_for(settings: Settings, temporal: Client, redis: Redis, pool: asyncpg.Pool, room: int) -> OutboxRelay:
    routes = relay_routes(temporal, redis, settings, pool)
    return OutboxRelay(pool, settings.database_url, routes, poll_seconds=0.1, admission=WorkflowAdmission(room))


async def in_flight_by_tenant(pool: asyncpg.Pool) -> dict[uuid.UUID, int]:
    rows = await pool.fetch(
        "SELECT tenant_id, count(*) AS n FROM requests"
        " WHERE admitted_at IS NOT NULL AND completed_at IS NULL GROUP BY tenant_id"
    )
    return {row["tenant_id"]: row["n"] for row in rows}


async def test_a_tenant_alone_may_use_the_whole_room(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    await accept_requests(pool, tenant, 10, kind="sleep", payload={"seconds": 30})
    assert await relay_for(settings, temporal, redis, pool, room=4).relay_batch() == 4
    assert await in_flight_by_tenant(pool) == {tenant.id: 4}


async def test_tenants_waiting_together_share_the_room_by_weight(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, worker: None
) -> None:
    heavy, light = await make_tenant(pool, "heavy"), await make_tenant(pool, "light")
    await pool.execute("UPDATE tenants SET admission_weight = 3 WHERE id = $1", heavy.id)
    await accept_requests(pool, light, 20, kind="sleep", payload={"seconds": 30})  # the older backlog
    await accept_requests(pool, heavy, 20, kind="sleep", payload={"seconds": 30})
    assert await relay_for(settings, temporal, redis, pool, room=8).relay_batch() == 8
    assert await in_flight_by_tenant(pool) == {heavy.id: 6, light.id: 2}


async def test_a_tenant_holding_the_whole_room_with_long_work_does_not_stop_another_tenants_requests(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, worker: None
) -> None:
    hog, other = await make_tenant(pool, "hog"), await make_tenant(pool, "other")
    await accept_requests(pool, hog, 12, kind="sleep", payload={"seconds": 60})
    async with relaying(relay_for(settings, temporal, redis, pool, room=4)):
        await assert_eventually(lambda: _in_flight_is(pool, {hog.id: 4}), message="the hog did not fill the room")
        quick = await accept_requests(pool, other, 2)
        await assert_eventually(lambda: _done(pool, quick), timeout=20, message="the other tenant was starved")
    flights = await in_flight_by_tenant(pool)
    assert flights[hog.id] == 4, "the hog gained places while another tenant waited"


async def _in_flight_is(pool: asyncpg.Pool, expected: dict[uuid.UUID, int]) -> bool:
    return await in_flight_by_tenant(pool) == expected


async def _done(pool: asyncpg.Pool, ids: list[str]) -> bool:
    statuses = await pool.fetch("SELECT status FROM requests WHERE id = ANY ($1::uuid[])", [uuid.UUID(i) for i in ids])
    return len(statuses) == len(ids) and all(row["status"] == "DONE" for row in statuses)


async def test_a_start_temporal_refuses_as_invalid_ends_the_request_failed_with_why_on_every_channel(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    async with running_roles(settings, pool, redis, temporal, registry), api_client(settings, tenant.api_key) as http:
        await pool.execute("UPDATE handler_kinds SET task_queue = repeat('q', 2000) WHERE kind = 'echo'")
        response = await http.post("/v1/requests", json={"kind": "echo", "payload": {}})
        assert response.status_code == 202
        request_id = response.json()["id"]
        body = await wait_for_status(http, request_id, {"FAILED"}, timeout=20)
        assert body["error"]["type"] == "DispatchFailed", body
        assert "INVALID_ARGUMENT" in body["error"]["message"]
        events = await http.get(f"/v1/requests/{request_id}/events", headers={"Last-Event-ID": "0"}, timeout=5)
        assert "request.failed" in events.text and "DispatchFailed" in events.text
    dead = await pool.fetchrow(
        "SELECT id, dead_at, last_error FROM outbox WHERE request_id = $1", uuid.UUID(request_id)
    )
    assert dead is not None and dead["dead_at"] is not None, "the row is kept for operators"

    listed = await ackflow_cli(settings, "outbox", "--dead")
    assert str(dead["id"]) in listed and "INVALID_ARGUMENT" in listed
    assert "dropped" in await ackflow_cli(settings, "outbox", "drop", str(dead["id"]))
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE id = $1", dead["id"]) == 0


async def test_a_row_that_keeps_failing_is_dead_lettered_after_its_attempts_and_the_request_fails(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    [request_id] = await accept_requests(pool, tenant, 1)
    routes = relay_routes(temporal, redis, settings, pool)
    tries: collections.Counter[str] = collections.Counter()

    async def unreachable(event: OutboxEvent) -> None:
        tries[str(event.request_id)] += 1
        raise ConnectionError("Temporal is unreachable")

    relay = OutboxRelay(
        pool,
        settings.database_url,
        {**routes, TOPIC_BATCH: unreachable},
        poll_seconds=0.1,
        dead_letters=DeadLetterLimits(max_attempts=3),
    )
    async with relaying(relay):
        row = await assert_eventually(
            lambda: pool.fetchrow("SELECT status, error FROM requests WHERE id = $1 AND status = 'FAILED'", request_id),
            message="the request never failed",
        )
    assert tries[request_id] == 3
    assert row["error"]["type"] == "DispatchFailed" and "ConnectionError" in row["error"]["message"]
    refused = await ackflow_cli(
        settings, "outbox", "retry", str(await pool.fetchval("SELECT id FROM outbox")), ok=False
    )
    assert "has already ended FAILED: submit it again" in refused, "nothing would start: the request has ended"
    assert await pool.fetchval("SELECT dead_at IS NOT NULL FROM outbox")


async def test_a_postponed_row_is_dispatched_when_due_not_at_the_next_poll(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    [request_id] = await accept_requests(pool, tenant, 1)
    routes = relay_routes(temporal, redis, settings, pool)
    routes = {**routes, TOPIC_BATCH: failing_once(routes[TOPIC_BATCH])}
    relay = OutboxRelay(pool, settings.database_url, routes, poll_seconds=60, listen=False)
    async with relaying(relay):
        await assert_eventually(lambda: _done(pool, [request_id]), timeout=15, message="waited for the next poll")


async def test_the_reconciler_ends_a_request_whose_workflow_was_terminated(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    async with running_roles(settings, pool, redis, temporal, registry), api_client(settings, tenant.api_key) as http:
        response = await http.post("/v1/requests", json={"kind": "sleep", "payload": {"seconds": 60}})
        request_id = response.json()["id"]
        running = await wait_for_status(http, request_id, {"PROCESSING"})
        await temporal.get_workflow_handle(running["workflow_id"]).terminate("an operator's mistake")
        reconciler = Reconciler(pool, temporal, interval_seconds=0.2, grace_seconds=0)
        assert await reconciler.reconcile_once() == 1
        body = await wait_for_status(http, request_id, {"FAILED"}, timeout=5)
        assert body["error"]["type"] == "WorkflowEnded" and "TERMINATED" in body["error"]["message"]
        assert await reconciler.reconcile_once() == 0, "an ended request is not reconciled again"


async def test_the_reconciler_dispatches_again_a_request_whose_workflow_vanished(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    [request_id] = await accept_requests(pool, tenant, 1)
    # As if a relay started it and Temporal then lost its data: admitted, row gone, no workflow.
    await pool.execute("UPDATE requests SET admitted_at = now() - interval '1 minute'")
    await pool.execute("DELETE FROM outbox")
    reconciler = Reconciler(pool, temporal, interval_seconds=0.2, grace_seconds=0)
    assert await reconciler.reconcile_once() == 1
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE topic = 'request.accepted'") == 1
    async with relaying(relay_for(settings, temporal, redis, pool, room=10)):
        await assert_eventually(lambda: _done(pool, [request_id]), timeout=20, message="it never ran again")


async def ackflow_cli(settings: Settings, *args: str, ok: bool = True) -> str:
    """The command's output (stderr too when `ok` is False: it must then fail)."""
    env = {**os.environ, "DATABASE_URL": settings.database_url}
    process = await asyncio.create_subprocess_exec(
        ACKFLOW, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert (process.returncode == 0) == ok, err.decode()
    return out.decode() + ("" if ok else err.decode())


async def test_a_request_for_a_task_queue_no_worker_polls_waits_in_the_outbox_then_fails_with_why(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    await pool.execute("UPDATE handler_kinds SET task_queue = 'nobody-polls-this' WHERE kind = 'echo'")
    [request_id] = await accept_requests(pool, tenant, 1)
    routes = relay_routes(temporal, redis, settings, pool)
    relay = OutboxRelay(
        pool, settings.database_url, routes, poll_seconds=0.1, dead_letters=DeadLetterLimits(max_attempts=3)
    )
    async with relaying(relay):
        row = await assert_eventually(
            lambda: pool.fetchrow("SELECT error FROM requests WHERE id = $1 AND status = 'FAILED'", request_id),
            message="the request never failed",
        )
    assert row["error"]["type"] == "DispatchFailed"
    assert "no worker polls task queue 'nobody-polls-this'" in row["error"]["message"]
    assert await executions_of(temporal, request_id, expected=0) == 0, "a workflow was left waiting inside Temporal"


async def test_tenants_arriving_one_after_another_never_put_more_than_twice_the_room_in_flight(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, worker: None
) -> None:
    relay = relay_for(settings, temporal, redis, pool, room=4)
    hog = await make_tenant(pool, "hog")
    await accept_requests(pool, hog, 10, kind="sleep", payload={"seconds": 60})
    await relay.relay_batch()
    assert await in_flight_by_tenant(pool) == {hog.id: 4}
    admitted = []
    for name in ("b", "c", "d", "e", "f"):  # each arrives while the others' long work holds its places
        newcomer = await make_tenant(pool, name)
        await accept_requests(pool, newcomer, 10, kind="sleep", payload={"seconds": 60})
        await relay.relay_batch()
        flights = await in_flight_by_tenant(pool)
        admitted.append(flights.get(newcomer.id, 0))
        assert sum(flights.values()) <= 8
    assert admitted == [2, 1, 1, 0, 0], "each newcomer gets its share (at least one) until twice the room is used"


async def test_a_light_tenant_beside_a_heavy_one_still_gets_a_place(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, worker: None
) -> None:
    heavy, light = await make_tenant(pool, "heavy"), await make_tenant(pool, "light")
    await pool.execute("UPDATE tenants SET admission_weight = 1000 WHERE id = $1", heavy.id)
    await accept_requests(pool, heavy, 20, kind="sleep", payload={"seconds": 60})
    await accept_requests(pool, light, 5, kind="sleep", payload={"seconds": 60})
    await relay_for(settings, temporal, redis, pool, room=4).relay_batch()
    flights = await in_flight_by_tenant(pool)
    assert flights[light.id] == 1 and flights[heavy.id] >= 3, flights


async def test_a_relay_that_overran_its_lease_changes_nothing_another_relay_now_holds(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    await accept_requests(pool, tenant, 2)
    late, current = (relay_for(settings, temporal, redis, pool, room=10) for _ in range(2))
    late_claim = await late._claim()
    assert [e.topic for e in late_claim] == [TOPIC_BATCH], "the two requests, admitted together, make one batch"
    await pool.execute("UPDATE outbox SET claimed_until = now() - interval '1 second'")  # late's lease ran out
    current_claim = await current._claim()
    assert {e.id for e in current_claim} == {e.id for e in late_claim}, "the batch row is claimed again whole"
    await late._settle(late_claim, [ConnectionError("too late")])  # neither postponed nor deleted
    rows = await pool.fetch("SELECT id, attempts, claimed_until FROM outbox ORDER BY id")
    assert [(row["attempts"], row["claimed_until"]) for row in rows] == [(0, e.claimed_until) for e in current_claim]
    assert await in_flight(pool) == 2, "the late relay gave back places the current one holds"
    await current._settle(current_claim, [None])
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_dropping_a_waiting_accepted_row_ends_its_request_failed_with_why(
    settings: Settings, pool: asyncpg.Pool, registry: HandlerRegistry, tenant: Tenant
) -> None:
    await register_kinds(pool, registry, settings.task_queue)
    [request_id] = await accept_requests(pool, tenant, 1)
    row_id = await pool.fetchval("SELECT id FROM outbox")
    assert f"{row_id}  request.accepted  request {request_id}" in await ackflow_cli(settings, "outbox")
    assert "dropped" in await ackflow_cli(settings, "outbox", "drop", str(row_id))
    row = await pool.fetchrow("SELECT status, error FROM requests WHERE id = $1", request_id)
    assert row["status"] == "FAILED" and row["error"]["type"] == "DispatchDropped"


async def test_the_reconciler_dispatches_nothing_again_when_it_is_the_namespace_that_is_missing(
    settings: Settings, pool: asyncpg.Pool, registry: HandlerRegistry, tenant: Tenant
) -> None:
    await register_kinds(pool, registry, settings.task_queue)
    [request_id] = await accept_requests(pool, tenant, 1)
    await pool.execute("UPDATE requests SET admitted_at = now() - interval '1 minute'")
    await pool.execute("DELETE FROM outbox")
    mistyped = await Client.connect(settings.temporal_address, namespace=f"no-such-{uuid.uuid4().hex[:8]}")
    with pytest.raises(RPCError):
        await Reconciler(pool, mistyped, interval_seconds=1, grace_seconds=0).reconcile_once()
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0, "a request was sent again"
    assert await pool.fetchval("SELECT admitted_at IS NOT NULL FROM requests WHERE id = $1", request_id)
