"""Delayed start in the relay's admission, on real Postgres and Temporal: a request accepted with
`run_at` / `delay_seconds` is not admitted before its time by any claim, is admitted as soon as it is
due, and neither counts as waiting for admission nor ages the outbox meanwhile."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow.db.accept import accept_request
from ackflow.db.stage_health import read_stage_health
from ackflow.events import OutboxEvent
from ackflow.ids import new_request_id
from ackflow.settings import Settings
from outbox_cdc.lag import committed_at
from tests.conftest import Tenant, make_tenant
from tests.helpers import assert_eventually
from tests.integration.test_admission import in_flight_by_tenant, relay_for
from tests.integration.test_relay import accept_requests, relaying, worker

__all__ = ["worker"]  # the fixture


async def accept_delayed(
    pool: asyncpg.Pool, tenant: Tenant, *, run_at: datetime | None = None, delay_seconds: float | None = None
) -> uuid.UUID:
    row = await accept_request(
        pool, new_request_id(), tenant.id, "echo", {"delayed": True}, run_at=run_at, delay_seconds=delay_seconds
    )
    assert row is not None and row["scheduled_for"] is not None
    return uuid.UUID(str(row["id"]))


async def test_no_claim_admits_a_delayed_request_before_its_time_and_one_does_as_soon_as_it_is_due(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    request_id = await accept_delayed(pool, tenant, delay_seconds=2.0)
    relay = relay_for(settings, temporal, redis, pool, room=10)

    assert await relay.relay_batch() == 0, "claimed before its time"
    assert await pool.fetchval("SELECT admitted_at FROM requests WHERE id = $1", request_id) is None

    async def admitted() -> bool:
        return await relay.relay_batch() > 0

    await assert_eventually(admitted, timeout=30, message="the delayed request was never admitted")
    row = await pool.fetchrow("SELECT admitted_at, scheduled_for FROM requests WHERE id = $1", request_id)
    assert row["admitted_at"] >= row["scheduled_for"], dict(row)


async def test_run_at_in_the_past_is_due_at_once(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    request_id = await accept_delayed(pool, tenant, run_at=datetime.now(UTC) - timedelta(hours=1))

    assert await relay_for(settings, temporal, redis, pool, room=10).relay_batch() == 1
    assert await pool.fetchval("SELECT admitted_at FROM requests WHERE id = $1", request_id) is not None


async def test_a_request_not_yet_due_neither_waits_for_admission_nor_ages_the_outbox(
    pool: asyncpg.Pool, tenant: Tenant, worker: None
) -> None:
    await accept_delayed(pool, tenant, delay_seconds=3600.0)
    await pool.execute("UPDATE outbox SET created_at = now() - interval '1 hour' WHERE topic = 'request.accepted'")

    health = await read_stage_health(pool)

    assert health.waiting_admission == {} and health.oldest_admission_wait_seconds == 0.0
    assert health.outbox["request.accepted"].rows == 1
    assert health.outbox["request.accepted"].oldest_age_seconds == 0.0


async def test_the_relay_lag_of_a_delayed_request_runs_from_its_scheduled_time_not_its_accept(
    pool: asyncpg.Pool, tenant: Tenant, worker: None
) -> None:
    request_id = await accept_delayed(pool, tenant, run_at=datetime.now(UTC) + timedelta(hours=1))
    row = await pool.fetchrow("SELECT * FROM outbox WHERE request_id = $1", request_id)
    payload = row["payload"] if isinstance(row["payload"], dict) else json.loads(row["payload"])
    event = OutboxEvent(row["id"], row["topic"], row["tenant_id"], request_id, row["event_id"], payload, 0)

    scheduled_for = await pool.fetchval("SELECT scheduled_for FROM requests WHERE id = $1", request_id)
    assert committed_at(event) == scheduled_for.timestamp()


async def test_a_delayed_request_runs_to_done_through_the_running_relay_never_started_early(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    request_id = await accept_delayed(pool, tenant, delay_seconds=1.0)

    async with relaying(relay_for(settings, temporal, redis, pool, room=10)):

        async def done() -> bool:
            return bool(await pool.fetchval("SELECT status FROM requests WHERE id = $1", request_id) == "DONE")

        await assert_eventually(done, timeout=60, message="the delayed request never ended")
    started = await pool.fetchval(
        "SELECT e.created_at >= r.scheduled_for FROM request_events e JOIN requests r ON r.id = e.request_id"
        " WHERE e.request_id = $1 AND e.topic = 'request.processing'",
        request_id,
    )
    assert started is True


async def test_a_tenant_with_only_delayed_requests_takes_no_share_of_a_full_room(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, worker: None
) -> None:
    busy, waiting, later = [await make_tenant(pool, name) for name in ("busy", "waiting", "later")]
    relay = relay_for(settings, temporal, redis, pool, room=4)
    await accept_requests(pool, busy, 4, kind="sleep", payload={"seconds": 30})
    assert await relay.relay_batch() == 4  # the room is full
    for _ in range(5):
        await accept_delayed(pool, later, delay_seconds=600.0)
    await accept_requests(pool, waiting, 5, kind="sleep", payload={"seconds": 30})  # still in flight when counted

    await relay.relay_batch()

    # Two tenants with work share the room of 4: two places each. Were `later` counted, a third each.
    assert (await in_flight_by_tenant(pool)).get(waiting.id) == 2
