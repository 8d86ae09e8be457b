"""The outbox relay against real Postgres and Temporal: once per request, nothing left behind."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from ackflow.contracts import TOPIC_ACCEPTED, TOPIC_BATCH
from ackflow.db.accept import accept_request
from ackflow.db.waker import OutboxWaker
from ackflow.events import OutboxEvent, Route
from ackflow.handlers import HandlerRegistry
from ackflow.ids import new_request_id
from ackflow.roles import relay_routes
from ackflow.settings import Settings
from activities.worker import register_kinds
from outbox_cdc import OutboxRelay
from tests.conftest import Tenant, api_client, running_roles
from tests.helpers import assert_eventually


async def accept_requests(
    pool: asyncpg.Pool,
    tenant: Tenant | uuid.UUID,
    count: int,
    kind: str = "echo",
    payload: dict[str, Any] | None = None,
) -> list[str]:
    """Commit `count` requests exactly as the gateway does (one statement each)."""
    ids = []
    tenant_id = tenant if isinstance(tenant, uuid.UUID) else tenant.id
    for i in range(count):
        row = await accept_request(pool, new_request_id(), tenant_id, kind, payload or {"i": i})
        assert row is not None
        ids.append(str(row["id"]))
    return ids


async def outbox_size(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM outbox"))


@contextlib.asynccontextmanager
async def relaying(relay: OutboxRelay) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield task
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


def counting(routes: Mapping[str, Route], counts: collections.Counter[int]) -> dict[str, Route]:
    """The same routes, counting each outbox row id they are called with."""

    def wrap(route: Route) -> Route:
        async def counted(event: OutboxEvent) -> None:
            counts[event.id] += 1
            await route(event)

        return counted

    return {topic: wrap(route) for topic, route in routes.items()}


@pytest.fixture
async def worker(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry
) -> AsyncIterator[None]:
    """A worker polling the test's task queue: the relay starts workflows only where one polls."""
    await register_kinds(pool, registry, settings.task_queue)
    async with running_roles(settings, pool, redis, temporal, registry, gateway=False, relay=False):
        await assert_eventually(lambda: _polled(temporal, settings.task_queue), message="the worker never polled")
        yield


async def _polled(temporal: Client, task_queue: str) -> bool:
    described = await temporal.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=temporal.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return bool(described.pollers)


def failing_once(route: Route) -> Route:
    """The route, failing its first call as if Temporal were briefly unreachable."""
    failures = 1

    async def fail_once(event: OutboxEvent) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("Temporal is briefly unreachable")
        await route(event)

    return fail_once


async def executions_of(temporal: Client, request_id: str, *, expected: int = 1) -> int:
    """How many workflow runs ever ran the request (found by the search attribute listing a batch's requests).

    Temporal's visibility store indexes a start a moment after it happens, so a fresh count can read
    low: poll (for at most 15 s) until `expected` runs are listed, and return the count then. Absence
    cannot be waited for, so `expected=0` reads once.
    """
    deadline = time.monotonic() + 15
    while True:
        found = len([w async for w in temporal.list_workflows(f"AckflowRequestIds = '{request_id}'")])
        if found >= expected or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


def members(event: OutboxEvent) -> list[str]:
    """The request ids of a `request.batch` row."""
    return [str(member["request_id"]) for member in event.payload["requests"]]


BATCHED = "SELECT coalesce(sum(cardinality(request_ids)), 0) FROM outbox WHERE topic = 'request.batch'"


async def test_relay_starts_each_request_once_when_it_stops_between_dispatch_and_delete(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: Redis,
    temporal: Client,
    registry: HandlerRegistry,
    tenant: Tenant,
    worker: None,
) -> None:
    ids = await accept_requests(pool, tenant, 20)
    routes = relay_routes(temporal, redis, settings, pool)
    started: collections.Counter[str] = collections.Counter()
    hang = asyncio.Event()

    async def start_then_hang(event: OutboxEvent) -> None:
        await routes[TOPIC_BATCH](event)
        started.update(members(event))
        await hang.wait()  # the relay "dies" here: workflow started, outbox row not yet deleted

    dying = OutboxRelay(
        pool, settings.database_url, {**routes, TOPIC_BATCH: start_then_hang}, dispatch_timeout=60, lease_seconds=61
    )
    stop = asyncio.Event()
    task = asyncio.create_task(dying.run(stop))
    await assert_eventually(lambda: _all_started(started, ids), message="first relay never started them all")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await pool.fetchval(BATCHED) == 20, "the stopped relay's batch rows must stay in the outbox"
    assert not await pool.fetchval("SELECT count(*) FROM outbox WHERE topic = 'request.accepted'")
    leased = await pool.fetchval(BATCHED + " AND claimed_until > now()")
    assert leased == 20, "the claim committed its leases before dispatching"
    # Status events of the started batch keep arriving (its worker runs it): they are not this test's.
    claimed = await OutboxRelay(pool, settings.database_url, routes)._claim()
    assert not [event for event in claimed if event.topic in (TOPIC_BATCH, TOPIC_ACCEPTED)], "a live lease was taken"

    await pool.execute("UPDATE outbox SET claimed_until = now() - interval '1 second'")  # the leases run out
    async with running_roles(settings, pool, redis, temporal, registry, gateway=False, worker=False):
        await assert_eventually(lambda: _no_outbox(pool), message="second relay left rows behind")
        await assert_eventually(lambda: _all_done(pool, ids), timeout=30, message="not every request finished")

    for request_id in ids:
        assert await executions_of(temporal, request_id) == 1
    done_events = await pool.fetchval("SELECT count(*) FROM request_events WHERE topic = 'request.done'")
    assert done_events == 20


async def test_the_claim_commits_before_dispatch_so_no_transaction_stays_open_across_rpcs(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    await accept_requests(pool, tenant, 3)
    routes = relay_routes(temporal, redis, settings, pool)
    inside: list[int] = []

    async def look_at_transactions(event: OutboxEvent) -> None:
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
        )
        inside.append(await pool.fetchval(query))
        await routes[TOPIC_BATCH](event)

    relay = OutboxRelay(pool, settings.database_url, {**routes, TOPIC_BATCH: look_at_transactions})
    assert await relay.relay_batch() == 3
    assert inside == [0], "a transaction was left open while the batch dispatched"
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE topic IN ('request.accepted', 'request.batch')") == 0


async def test_two_relays_on_one_outbox_dispatch_every_row_exactly_once(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    ids = await accept_requests(pool, tenant, 200)
    counts: collections.Counter[int] = collections.Counter()
    routes = counting(relay_routes(temporal, redis, settings, pool), counts)
    first = OutboxRelay(pool, settings.database_url, routes, batch_size=10, poll_seconds=0.2)
    second = OutboxRelay(pool, settings.database_url, routes, batch_size=10, poll_seconds=0.2)

    async with relaying(first), relaying(second):
        await assert_eventually(lambda: _no_outbox(pool), timeout=60, message="rows left in the outbox")

    assert len(counts) >= 200 // 10  # the batch rows, and status events of those already running
    assert set(counts.values()) == {1}, "a row was dispatched twice"
    for request_id in ids[::20]:
        assert await executions_of(temporal, request_id) == 1


async def test_relay_keeps_a_failed_dispatch_and_retries_it(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    [request_id] = await accept_requests(pool, tenant, 1)
    routes = relay_routes(temporal, redis, settings, pool)
    routes = {**routes, TOPIC_BATCH: failing_once(routes[TOPIC_BATCH])}
    relay = OutboxRelay(pool, settings.database_url, routes, poll_seconds=0.2)
    async with relaying(relay):
        row = await assert_eventually(
            lambda: pool.fetchrow("SELECT attempts, last_error FROM outbox WHERE attempts > 0"),
            message="the failed dispatch was not recorded on its row",
        )
        assert row["attempts"] == 1 and "briefly unreachable" in row["last_error"]
        await assert_eventually(lambda: _no_outbox(pool), message="the retried row was not delivered")
    assert await executions_of(temporal, request_id) == 1


async def test_relay_wakes_on_notify_long_before_its_poll_interval(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    slow_poll = replace(settings, relay_poll_seconds=60)
    relay = OutboxRelay(pool, slow_poll.database_url, relay_routes(temporal, redis, slow_poll, pool), poll_seconds=60)
    async with relaying(relay):
        await assert_eventually(lambda: _listening(pool), message="relay never issued LISTEN")
        await accept_requests(pool, tenant, 3)
        await OutboxWaker(pool).wake_now()  # what the gateway does after each accept commits
        await assert_eventually(lambda: _no_outbox(pool), timeout=10, message="NOTIFY did not wake the relay")


async def test_relay_polls_rows_whose_notification_was_lost(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    await pool.execute("ALTER TABLE outbox DISABLE TRIGGER outbox_notify")
    relay = OutboxRelay(pool, settings.database_url, relay_routes(temporal, redis, settings, pool), poll_seconds=0.3)
    async with relaying(relay):
        await assert_eventually(lambda: _listening(pool), message="relay never issued LISTEN")
        await accept_requests(pool, tenant, 3)
        await assert_eventually(lambda: _no_outbox(pool), timeout=10, message="polling did not pick the rows up")


async def test_relay_with_outbox_notify_off_polls_without_listening_and_still_starts_every_request(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    poll_only = replace(settings, outbox_notify=False)
    async with running_roles(poll_only, pool, redis, temporal, registry), api_client(poll_only, tenant.api_key) as http:
        ids = []
        for i in range(3):
            response = await http.post("/v1/requests", json={"kind": "echo", "payload": {"i": i}})
            assert response.status_code == 202
            ids.append(response.json()["id"])
        await assert_eventually(lambda: _all_done(pool, ids), timeout=30, message="polling did not relay them")
        assert not await _listening(pool), "the relay must not LISTEN with ACKFLOW_OUTBOX_NOTIFY=false"


async def _all_started(started: collections.Counter[str], ids: list[str]) -> bool:
    return all(started[i] >= 1 for i in ids)


async def _no_outbox(pool: asyncpg.Pool) -> bool:
    return await outbox_size(pool) == 0


async def _all_done(pool: asyncpg.Pool, ids: list[str]) -> bool:
    done = await pool.fetchval("SELECT count(*) FROM requests WHERE status = 'DONE'")
    return bool(done == len(ids))


async def _listening(pool: asyncpg.Pool) -> bool:
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND query ILIKE 'LISTEN%ackflow_outbox%'"
    )
    return bool(await pool.fetchval(query))


async def test_relay_admits_no_more_workflows_than_its_in_flight_limit_and_the_rest_wait_in_the_outbox(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    from outbox_cdc import WorkflowAdmission

    ids = await accept_requests(pool, tenant, 12, kind="sleep", payload={"seconds": 0.5})
    relays = [
        OutboxRelay(
            pool,
            settings.database_url,
            relay_routes(temporal, redis, settings, pool),
            poll_seconds=0.1,
            admission=WorkflowAdmission(3),
        )
        for _ in range(2)
    ]
    peak = 0

    async def drained() -> bool:
        nonlocal peak
        peak = max(peak, await in_flight(pool))
        return await _all_done(pool, ids)

    async with relaying(relays[0]), relaying(relays[1]):  # two relays share one room of 3
        await assert_eventually(drained, timeout=60, interval=0.02, message="the backlog never drained")
    assert peak == 3, f"{peak} requests were in flight at once, with room for 3"
    for request_id in ids[::4]:
        assert await executions_of(temporal, request_id) == 1


async def in_flight(pool: asyncpg.Pool) -> int:
    return int(
        await pool.fetchval("SELECT count(*) FROM requests WHERE admitted_at IS NOT NULL AND completed_at IS NULL")
    )


async def test_a_claim_reads_a_few_index_pages_however_many_requests_wait_for_admission(
    pool: asyncpg.Pool, tenant: Tenant
) -> None:
    """The claim once scanned the whole outbox for rows of other topics: O(backlog) on every wake-up.
    Its cost may grow with the tenants waiting (a few index pages each), never with their backlogs."""
    tenants = [tenant.id, *[uuid.uuid4() for _ in range(49)]]
    await pool.execute("INSERT INTO tenants (id, name) SELECT id, id::text FROM unnest($1::uuid[]) AS id", tenants[1:])
    claim = await installed_claim(pool)
    pages: dict[tuple[int, int | None], int] = {}
    for backlog in (1_000, 10_000):
        await pool.execute(
            "INSERT INTO outbox (topic, tenant_id, request_id)"
            " SELECT $1, t, gen_random_uuid() FROM unnest($2::uuid[]) AS t, generate_series(1, $3)",
            TOPIC_ACCEPTED,
            tenants,
            backlog // len(tenants),
        )
        await pool.execute("VACUUM ANALYZE outbox")  # as autovacuum leaves it: no dead rows of the last round
        for in_flight_limit in (1, 5, None):  # admission nearly full, some room, no admission at all
            async with pool.acquire() as connection:
                transaction = connection.transaction()
                await transaction.start()
                explain = "EXPLAIN (ANALYZE, BUFFERS) " + claim
                plan = "\n".join(row[0] for row in await connection.fetch(explain, 10, in_flight_limit, 30))
                await transaction.rollback()
            assert "Seq Scan on outbox" not in plan, plan
            pages[backlog, in_flight_limit] = int(re.search(r"shared hit=(\d+)", plan).group(1))  # the whole claim
        await pool.execute("DELETE FROM outbox")
    for in_flight_limit in (1, 5, None):
        small, large = pages[1_000, in_flight_limit], pages[10_000, in_flight_limit]
        assert large < small * 1.5 + 20, f"ten times the backlog: {small} -> {large} pages ({in_flight_limit=})"


async def installed_claim(pool: asyncpg.Pool) -> str:
    """The fair claim of ackflow_claim_outbox (its three-argument form, which the batching one calls) as
    installed, with $1..$3 for its arguments."""
    source = await pool.fetchval("SELECT prosrc FROM pg_proc WHERE proname = 'ackflow_claim_outbox' AND pronargs = 3")
    statement = source.split("RETURN QUERY", 1)[1].rsplit(";", 2)[0]
    for number, name in enumerate(("p_batch", "p_max_in_flight", "p_lease_seconds"), start=1):
        statement = statement.replace(name, f"${number}")
    return str(statement)
