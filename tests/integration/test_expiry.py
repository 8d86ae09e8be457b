"""Expiry on real Postgres: a request past its `expires_at` is cancelled where it would start (never
run late, whoever starts it), and the relays' sweep cancels those still waiting, dropping their
accepted rows; a request not yet expired is left alone."""

from __future__ import annotations

import uuid

import asyncpg

from ackflow.db.accept import accept_request
from ackflow.db.transitions import start_many, start_request
from ackflow.handlers import HandlerRegistry
from ackflow.ids import new_request_id
from ackflow.settings import Settings
from activities.worker import register_kinds
from outbox_cdc import ExpirySweep
from tests.conftest import Tenant
from tests.helpers import assert_eventually


async def accept_expiring(pool: asyncpg.Pool, tenant: Tenant, ttl_seconds: float) -> uuid.UUID:
    row = await accept_request(pool, new_request_id(), tenant.id, "echo", {}, ttl_seconds=ttl_seconds)
    assert row is not None and row["expires_at"] is not None
    return uuid.UUID(str(row["id"]))


async def expired(pool: asyncpg.Pool, *request_ids: uuid.UUID) -> None:
    async def past() -> bool:
        return bool(await pool.fetchval("SELECT now() > max(expires_at) FROM requests WHERE id = ANY($1)", request_ids))

    await assert_eventually(past, timeout=10, message="the requests never expired")


async def history(pool: asyncpg.Pool, request_id: uuid.UUID) -> tuple[str, str | None, list[str]]:
    row = await pool.fetchrow("SELECT status, error ->> 'type' AS type FROM requests WHERE id = $1", request_id)
    topics = await pool.fetch("SELECT topic FROM request_events WHERE request_id = $1 ORDER BY version", request_id)
    return row["status"], row["type"], [t["topic"] for t in topics]


async def test_an_expired_request_is_cancelled_where_it_would_start_and_never_runs(
    settings: Settings, pool: asyncpg.Pool, registry: HandlerRegistry, tenant: Tenant
) -> None:
    await register_kinds(pool, registry, settings.task_queue)
    alone, in_batch, fresh = [await accept_expiring(pool, tenant, ttl) for ttl in (0.2, 0.2, 600)]
    await expired(pool, alone, in_batch)

    assert await start_request(pool, alone) is None
    started = await start_many(pool, [str(in_batch), str(fresh)])

    assert [row["id"] for row in started] == [fresh]
    for request_id in (alone, in_batch):
        assert await history(pool, request_id) == (
            "CANCELLED",
            "Expired",
            ["request.accepted", "request.cancelled"],
        )
    assert (await history(pool, fresh))[0] == "PROCESSING"


async def test_the_sweep_cancels_requests_waiting_past_their_expiry_and_drops_their_accepted_rows(
    settings: Settings, pool: asyncpg.Pool, registry: HandlerRegistry, tenant: Tenant
) -> None:
    await register_kinds(pool, registry, settings.task_queue)
    short = [await accept_expiring(pool, tenant, 0.2) for _ in range(3)]
    long = await accept_expiring(pool, tenant, 600)
    await expired(pool, *short)
    sweep = ExpirySweep(pool)

    assert await sweep.sweep() == 3
    assert await sweep.sweep() == 0, "each is cancelled once"

    for request_id in short:
        status, error_type, topics = await history(pool, request_id)
        assert (status, error_type, topics) == ("CANCELLED", "Expired", ["request.accepted", "request.cancelled"])
    accepted_rows = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE topic = 'request.accepted' AND request_id = ANY($1)", short
    )
    assert accepted_rows == 0
    assert (await history(pool, long))[0] == "INIT"
    message = await pool.fetchval("SELECT error ->> 'message' FROM requests WHERE id = $1", short[0])
    assert message.startswith("not started before it expired at ")
