"""The outbox relay against real Postgres and Temporal: once per request, nothing left behind."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace

import asyncpg
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow.contracts import TOPIC_ACCEPTED, workflow_id_for
from ackflow.db.accept import accept_request
from ackflow.db.queries import sql
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


async def accept_requests(pool: asyncpg.Pool, tenant: Tenant, count: int, kind: str = "echo") -> list[str]:
    """Commit `count` requests exactly as the gateway does (one statement each)."""
    ids = []
    for i in range(count):
        row = await accept_request(pool, new_request_id(), tenant.id, kind, {"i": i})
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


async def executions_of(temporal: Client, request_id: str) -> int:
    return len([w async for w in temporal.list_workflows(f"WorkflowId = '{workflow_id_for(request_id)}'")])


async def test_relay_starts_each_request_once_when_killed_between_claim_and_delete(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    await register_kinds(pool, registry, settings.task_queue)
    ids = await accept_requests(pool, tenant, 20)
    routes = relay_routes(temporal, redis, settings, pool)
    started: collections.Counter[str] = collections.Counter()
    hang = asyncio.Event()

    async def start_then_hang(event: OutboxEvent) -> None:
        await routes[TOPIC_ACCEPTED](event)
        started[str(event.request_id)] += 1
        await hang.wait()  # the relay "dies" here: workflow started, outbox row not yet deleted

    dying = OutboxRelay(pool, settings.database_url, {**routes, TOPIC_ACCEPTED: start_then_hang}, dispatch_timeout=60)
    stop = asyncio.Event()
    task = asyncio.create_task(dying.run(stop))
    await assert_eventually(lambda: _all_started(started, ids), message="first relay never started them all")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await outbox_size(pool) == 20, "the killed relay's claims must roll back, not vanish"

    async with running_roles(settings, pool, redis, temporal, registry, gateway=False):
        await assert_eventually(lambda: _no_outbox(pool), message="second relay left rows behind")
        await assert_eventually(lambda: _all_done(pool, ids), timeout=30, message="not every request finished")

    for request_id in ids:
        assert await executions_of(temporal, request_id) == 1
    done_events = await pool.fetchval("SELECT count(*) FROM request_events WHERE topic = 'request.done'")
    assert done_events == 20


async def test_two_relays_on_one_outbox_dispatch_every_row_exactly_once(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    await register_kinds(pool, registry, settings.task_queue)
    ids = await accept_requests(pool, tenant, 200)
    counts: collections.Counter[int] = collections.Counter()
    routes = counting(relay_routes(temporal, redis, settings, pool), counts)
    first = OutboxRelay(pool, settings.database_url, routes, batch_size=10, poll_seconds=0.2)
    second = OutboxRelay(pool, settings.database_url, routes, batch_size=10, poll_seconds=0.2)

    async with relaying(first), relaying(second):
        await assert_eventually(lambda: _no_outbox(pool), timeout=60, message="rows left in the outbox")

    assert len(counts) == 200
    assert set(counts.values()) == {1}, "a row was dispatched twice"
    for request_id in ids[::20]:
        assert await executions_of(temporal, request_id) == 1


async def test_relay_keeps_a_failed_dispatch_and_retries_it(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    await register_kinds(pool, registry, settings.task_queue)
    [request_id] = await accept_requests(pool, tenant, 1)
    routes = relay_routes(temporal, redis, settings, pool)
    failures = 1

    async def fail_once(event: OutboxEvent) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("Temporal is briefly unreachable")
        await routes[TOPIC_ACCEPTED](event)

    relay = OutboxRelay(pool, settings.database_url, {**routes, TOPIC_ACCEPTED: fail_once}, poll_seconds=0.2)
    async with relaying(relay):
        row = await assert_eventually(
            lambda: pool.fetchrow("SELECT attempts, last_error FROM outbox WHERE attempts > 0"),
            message="the failed dispatch was not recorded on its row",
        )
        assert row["attempts"] == 1 and "briefly unreachable" in row["last_error"]
        await assert_eventually(lambda: _no_outbox(pool), message="the retried row was not delivered")
    assert await executions_of(temporal, request_id) == 1


async def test_relay_wakes_on_notify_long_before_its_poll_interval(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    await register_kinds(pool, registry, settings.task_queue)
    slow_poll = replace(settings, relay_poll_seconds=60)
    relay = OutboxRelay(pool, slow_poll.database_url, relay_routes(temporal, redis, slow_poll, pool), poll_seconds=60)
    async with relaying(relay):
        await asyncio.sleep(0)  # let it claim nothing and go to sleep on LISTEN
        await assert_eventually(lambda: _listening(pool), message="relay never issued LISTEN")
        await accept_requests(pool, tenant, 3)
        await OutboxWaker(pool).wake_now()  # what the gateway does after each accept commits
        await assert_eventually(lambda: _no_outbox(pool), timeout=10, message="NOTIFY did not wake the relay")


async def test_relay_polls_rows_whose_notification_was_lost(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    await register_kinds(pool, registry, settings.task_queue)
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
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    from outbox_cdc import WorkflowAdmission

    await register_kinds(pool, registry, settings.task_queue)
    ids = await accept_requests(pool, tenant, 20)
    relay = OutboxRelay(
        pool,
        settings.database_url,
        relay_routes(temporal, redis, settings, pool),
        poll_seconds=0.2,
        admission=WorkflowAdmission(5),
    )
    async with relaying(relay):  # no worker yet: nothing finishes, so only 5 may start
        await assert_eventually(lambda: _started_count(pool, 5), message="the first 5 were not admitted")
        await asyncio.sleep(1)  # give an over-eager relay the chance to start more
        assert await _started_count(pool, 5)
        assert await outbox_size(pool) == 15
        async with running_roles(settings, pool, redis, temporal, registry, gateway=False, relay=False):
            await assert_eventually(lambda: _all_done(pool, ids), timeout=60, message="the backlog never drained")
    for request_id in ids[::5]:
        assert await executions_of(temporal, request_id) == 1


async def _started_count(pool: asyncpg.Pool, expected: int) -> bool:
    started = await pool.fetchval("SELECT count(*) FROM requests WHERE workflow_started_at IS NOT NULL")
    assert started <= expected, f"{started} workflows started, more than the {expected} admitted"
    return bool(started == expected)


async def test_a_claim_reads_a_few_index_pages_however_many_requests_wait_for_admission(
    pool: asyncpg.Pool, tenant: Tenant
) -> None:
    """The claim once scanned the whole outbox for rows of other topics: O(backlog) on every wake-up."""
    await pool.execute(
        "INSERT INTO outbox (topic, tenant_id, request_id)"
        " SELECT $1, $2, gen_random_uuid() FROM generate_series(1, 5000)",
        TOPIC_ACCEPTED,
        tenant.id,
    )
    await pool.execute("ANALYZE outbox")
    try:
        for in_flight_limit in (0, 5, None):  # admission full, some room, no admission at all
            async with pool.acquire() as connection, connection.transaction():
                explain = "EXPLAIN (ANALYZE, BUFFERS) " + sql("claim_outbox")
                plan = "\n".join(row[0] for row in await connection.fetch(explain, 10, in_flight_limit))
            assert "Seq Scan on outbox" not in plan, plan
            pages = int(re.search(r"shared hit=(\d+)", plan).group(1))  # the top node's: the whole claim
            assert pages < 50, f"a claim of 10 read {pages} pages of a 5,000-row outbox:\n{plan}"
    finally:
        await pool.execute("DELETE FROM outbox")
