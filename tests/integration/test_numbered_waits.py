"""A workflow kind's marks that its request waits for input, run again after the input arrived: a
worker that dies before its workflow task completes has the task run again on another, and its local
activities with it. The wait's number (migration 0022) keeps the second mark from marking the request
waiting again; a later wait for the same input name still marks it."""

from __future__ import annotations

import uuid

import asyncpg

from ackflow.contracts import INIT, PROCESSING
from ackflow.db.queries import sql
from ackflow.db.transitions import transition
from tests.conftest import Tenant
from tests.integration.test_relay import accept_requests, worker

__all__ = ["worker"]  # the fixture


async def waiting_events(pool: asyncpg.Pool, request_id: uuid.UUID) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM request_events WHERE request_id = $1 AND topic = 'request.waiting'", request_id
        )
    )


async def test_a_mark_run_again_after_its_input_arrived_changes_nothing_and_the_next_wait_still_marks(
    pool: asyncpg.Pool, tenant: Tenant, worker: None
) -> None:
    [request] = await accept_requests(pool, tenant, 1)
    request_id = uuid.UUID(request)
    assert await transition(pool, request_id, PROCESSING, (INIT,)) is not None
    await pool.execute(sql("mark_waiting"), request_id, "approval", 1)
    assert await pool.fetchval(sql("deliver_input"), request_id, tenant.id, "approval", {"ok": True}) is not None

    await pool.execute(sql("mark_waiting"), request_id, "approval", 1)  # the same wait, replayed

    assert await pool.fetchval("SELECT waiting FROM requests WHERE id = $1", request_id) is None
    assert await waiting_events(pool, request_id) == 1
    await pool.execute(sql("mark_waiting"), request_id, "approval", 2)  # the run's next wait, same name
    waiting = await pool.fetchval("SELECT waiting FROM requests WHERE id = $1", request_id)
    assert waiting["input"] == "approval" and await waiting_events(pool, request_id) == 2
