"""The relay's status route against real Postgres and Redis: the status events of one claim are fanned
out to webhooks in one statement and published in one pipeline, each delivery made exactly once."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline, PubSub

from ackflow import devstack
from ackflow.contracts import DONE, OPT_IN_EVENT_TYPES, PROCESSING, STATUS_TOPICS, TOPIC_FOR_STATUS
from ackflow.db.accept import accept_request
from ackflow.db.queries import sql
from ackflow.db.transitions import transition
from ackflow.events import Route
from ackflow.handlers import HandlerRegistry
from ackflow.ids import new_request_id
from ackflow.settings import Settings
from activities.worker import register_kinds
from callbacks import StatusEventRoute, StatusPublisher, WebhookFanout
from callbacks.fanout import webhook_body
from outbox_cdc import OutboxRelay
from tests.conftest import Tenant
from tests.helpers import assert_eventually

Delivery = tuple[int, uuid.UUID | None, str]  # event id, endpoint (None: the request's callback_url), url


class CountingPool:
    """The pool, counting the statements the fan-out runs through it; `failures` of them fail first."""

    def __init__(self, pool: asyncpg.Pool, *, failures: int = 0) -> None:
        self._pool = pool
        self._failures = failures
        self.statements = 0

    async def execute(self, query: str, *args: Any) -> str:
        self.statements += 1
        if self._failures:
            self._failures -= 1
            raise ConnectionError("Postgres is briefly unreachable")
        return cast(str, await self._pool.execute(query, *args))


class CountingRedis:
    """The Redis client, counting the pipelines (round trips) the publisher opens through it."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self.pipelines = 0

    def pipeline(self, transaction: bool = True) -> Pipeline:
        self.pipelines += 1
        return self._redis.pipeline(transaction=transaction)


def status_route(pool: CountingPool, redis: CountingRedis) -> dict[str, Route]:
    route = StatusEventRoute(WebhookFanout(cast(asyncpg.Pool, pool)), StatusPublisher(cast(Redis, redis)))
    return {topic: route for topic in STATUS_TOPICS}


async def add_endpoint(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, event_types: list[str], *, enabled: bool = True, deleted: bool = False
) -> uuid.UUID:
    endpoint_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, enabled, deleted_at)"
        " VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END)",
        endpoint_id,
        tenant_id,
        f"http://127.0.0.1:9/{endpoint_id}",
        event_types,
        enabled,
        deleted,
    )
    return endpoint_id


async def status_backlog(
    pool: asyncpg.Pool, registry: HandlerRegistry, settings: Settings, tenant: Tenant, other: Tenant, requests: int
) -> set[Delivery]:
    """Outbox rows of `requests` requests' status events (PROCESSING for all, DONE for every other one),
    with endpoints and callback URLs that match some of them; the deliveries today's fan-out makes."""
    await register_kinds(pool, registry, settings.task_queue)
    every = await add_endpoint(pool, tenant.id, ["request.*"])
    done_only = await add_endpoint(pool, tenant.id, ["request.done"])
    await add_endpoint(pool, tenant.id, ["request.*"], enabled=False)
    await add_endpoint(pool, tenant.id, ["request.*"], deleted=True)
    await add_endpoint(pool, other.id, ["request.*"])  # another tenant's: never a delivery of these events
    expected: set[Delivery] = set()
    for i in range(requests):
        callback_url = f"http://127.0.0.1:9/callback/{i}" if i % 3 != 2 else None
        callback_events = ["request.done"] if i % 3 == 1 else None
        request_id = new_request_id()
        row = await accept_request(
            pool, request_id, tenant.id, "echo", {"i": i}, callback_url=callback_url, callback_events=callback_events
        )
        assert row is not None
        statuses = [PROCESSING, DONE] if i % 2 == 0 else [PROCESSING]
        for status, before in zip(statuses, ["INIT", PROCESSING], strict=False):
            moved = await transition(pool, request_id, status, (before,), result={"i": i} if status == DONE else None)
            assert moved is not None
            event_id = int(moved["event_id"])
            expected.add((event_id, every, f"http://127.0.0.1:9/{every}"))
            if status == DONE:
                expected.add((event_id, done_only, f"http://127.0.0.1:9/{done_only}"))
            if callback_url is not None and (callback_events is None or status == DONE):
                expected.add((event_id, None, callback_url))
    # The accepted rows are the Temporal route's, not this test's; a status row without its event is skipped.
    await pool.execute("DELETE FROM outbox WHERE topic = 'request.accepted'")
    await pool.execute(
        "INSERT INTO outbox (topic, tenant_id, request_id) VALUES ($1, $2, $3)",
        TOPIC_FOR_STATUS[DONE],
        tenant.id,
        uuid.uuid4(),
    )
    return expected


async def deliveries(pool: asyncpg.Pool) -> list[Delivery]:
    rows = await pool.fetch("SELECT event_id, endpoint_id, url FROM webhook_deliveries")
    return [(row["event_id"], row["endpoint_id"], row["url"]) for row in rows]


@contextlib.asynccontextmanager
async def listening(redis: Redis, tenant: Tenant) -> AsyncIterator[PubSub]:
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"ackflow:tenant:{tenant.id}")
    await pubsub.psubscribe("ackflow:request:*")
    try:
        yield pubsub
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def published(pubsub: PubSub, count: int) -> list[tuple[str, int]]:
    """The next `count` messages: (channel, event id) each."""
    messages: list[tuple[str, int]] = []

    async def probe() -> bool:
        while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)) is not None:
            messages.append((message["channel"].decode(), msgspec.json.decode(message["data"])["event_id"]))
        return len(messages) >= count

    await assert_eventually(probe, message=f"{count} messages")
    return messages


def channels_of(rows: list[asyncpg.Record]) -> list[tuple[str, int]]:
    """Each status event on its request's channel and its tenant's, as the publisher sends them."""
    request_channels = [(f"ackflow:request:{row['request_id']}", row["event_id"]) for row in rows]
    tenant_channels = [(f"ackflow:tenant:{row['tenant_id']}", row["event_id"]) for row in rows]
    return sorted(request_channels + tenant_channels)


async def test_a_claim_of_status_events_is_fanned_out_in_one_statement_and_published_in_one_pipeline(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: Redis,
    registry: HandlerRegistry,
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    expected = await status_backlog(pool, registry, settings, tenant, other_tenant, requests=60)
    rows = await pool.fetch("SELECT * FROM outbox WHERE event_id IS NOT NULL")
    assert len(rows) == 90
    counted_pool, counted_redis = CountingPool(pool), CountingRedis(redis)
    relay = OutboxRelay(pool, settings.database_url, status_route(counted_pool, counted_redis), batch_size=200)
    async with listening(redis, tenant) as pubsub:
        assert await relay.relay_batch() == 91
        messages = await published(pubsub, 2 * len(rows))
    assert (counted_pool.statements, counted_redis.pipelines) == (1, 1)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    made = await deliveries(pool)
    assert sorted(made, key=str) == sorted(expected, key=str)  # each exactly once
    bodies = {row["event_id"]: row["body"] for row in await pool.fetch("SELECT event_id, body FROM webhook_deliveries")}
    for row in rows:
        payload = msgspec.json.decode(row["payload"]) if isinstance(row["payload"], str) else row["payload"]
        assert bodies.get(row["event_id"]) == webhook_body(row["topic"], str(payload["updated_at"]), payload)
    assert await pool.fetchval("SELECT bool_and(message_id = 'msg_' || event_id) FROM webhook_deliveries")
    assert sorted(messages) == channels_of(rows)


@pytest.mark.parametrize("broken", ["postgres", "redis"])
async def test_when_a_grouped_write_fails_every_event_of_the_claim_is_retried_and_still_delivered_once(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: Redis,
    registry: HandlerRegistry,
    tenant: Tenant,
    other_tenant: Tenant,
    broken: str,
) -> None:
    expected = await status_backlog(pool, registry, settings, tenant, other_tenant, requests=30)
    rows = await pool.fetch("SELECT * FROM outbox WHERE event_id IS NOT NULL")
    down = Redis(host="127.0.0.1", port=devstack.free_port(), socket_connect_timeout=1)  # nothing listens there
    try:
        failing = status_route(
            CountingPool(pool, failures=1 if broken == "postgres" else 0),
            CountingRedis(down if broken == "redis" else redis),
        )
        async with listening(redis, tenant) as pubsub:
            assert (
                await OutboxRelay(pool, settings.database_url, failing, batch_size=200).relay_batch() == len(rows) + 1
            )
            assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5) is None  # nothing published
    finally:
        await down.aclose()
    postponed = await pool.fetchval("SELECT count(*) FROM outbox WHERE attempts = 1 AND last_error IS NOT NULL")
    assert postponed == len(rows)  # every event of the failed group; the one without an event was done
    assert len(await deliveries(pool)) == (0 if broken == "postgres" else len(expected))

    await pool.execute("UPDATE outbox SET available_at = now()")  # due at once, not after the backoff
    working = status_route(CountingPool(pool), CountingRedis(redis))
    async with listening(redis, tenant) as pubsub:
        assert await OutboxRelay(pool, settings.database_url, working, batch_size=200).relay_batch() == len(rows)
        messages = await published(pubsub, 2 * len(rows))
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert sorted(await deliveries(pool), key=str) == sorted(expected, key=str)  # the re-sent rows made none twice
    assert sorted(messages) == channels_of(rows)


async def test_the_fan_out_looks_up_each_event_by_its_tenant_and_request_not_by_scanning(
    settings: Settings, pool: asyncpg.Pool, registry: HandlerRegistry, tenant: Tenant, other_tenant: Tenant
) -> None:
    """Endpoints and requests of many tenants: a group of events reads only its own by index."""
    await status_backlog(pool, registry, settings, tenant, other_tenant, requests=20)
    tenants = [uuid.uuid4() for _ in range(200)]
    await pool.execute("INSERT INTO tenants (id, name) SELECT id, id::text FROM unnest($1::uuid[]) AS id", tenants)
    await pool.execute(
        "INSERT INTO webhook_endpoints (id, tenant_id, url, event_types)"
        " SELECT gen_random_uuid(), t, 'http://127.0.0.1:9/', '{request.*}'"
        "   FROM unnest($1::uuid[]) AS t, generate_series(1, 20)",
        tenants,
    )
    await pool.execute(
        "INSERT INTO requests (id, tenant_id, kind, status, payload, callback_url)"
        " SELECT gen_random_uuid(), t, 'echo', 'DONE', '{}', 'http://127.0.0.1:9/'"
        "   FROM unnest($1::uuid[]) AS t, generate_series(1, 100)",
        tenants,
    )
    await pool.execute("ANALYZE webhook_endpoints; ANALYZE requests")
    rows = await pool.fetch("SELECT * FROM outbox WHERE event_id IS NOT NULL")
    args = (
        [row["event_id"] for row in rows],
        [row["topic"] for row in rows],
        [row["tenant_id"] for row in rows],
        [row["request_id"] for row in rows],
        ["{}" for _ in rows],
        list(OPT_IN_EVENT_TYPES),
    )
    for plan_cache_mode in ("force_custom_plan", "force_generic_plan"):  # as planned for these arrays, and for any
        async with pool.acquire() as connection:
            transaction = connection.transaction()
            await transaction.start()
            await connection.execute(f"SET LOCAL plan_cache_mode = {plan_cache_mode}")
            explain = "EXPLAIN ANALYZE " + sql("fan_out_webhooks")
            plan = "\n".join(row[0] for row in await connection.fetch(explain, *args))
            await transaction.rollback()
        assert "Seq Scan on webhook_endpoints" not in plan, plan
        assert "Seq Scan on requests" not in plan, plan
        assert "webhook_endpoints_tenant_idx" in plan and "requests_pkey" in plan, plan
