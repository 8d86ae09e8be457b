"""Delayed starts while every relay and a worker are SIGKILLed: each request starts once, never
before its scheduled time (by Postgres' clock), whichever relay claims it after the restart."""

from __future__ import annotations

from pathlib import Path

from ackflow.db.accept import accept_request
from ackflow.db.pool import create_pool
from ackflow.ids import new_request_id
from tests.chaos.stack import running_stack, tenant_once_registered
from tests.helpers import assert_eventually

REPOSITORY = Path(__file__).resolve().parents[2]
REQUESTS = 20


async def test_delayed_requests_whose_relays_are_killed_start_once_and_never_early(chaos_root: Path) -> None:
    async with running_stack(chaos_root, {"PYTHONPATH": str(REPOSITORY)}) as stack:
        pool = await create_pool(stack.database_url, size=2)
        try:
            tenant = await tenant_once_registered(pool, "delayed", "echo")
            ids = [new_request_id() for _ in range(REQUESTS)]
            for i, request_id in enumerate(ids):  # due from 1 s to about 8 s from now
                row = await accept_request(
                    pool, request_id, tenant.tenant_id, "echo", {"i": i}, delay_seconds=1 + 7 * i / REQUESTS
                )
                assert row is not None

            async def ended(count: int) -> bool:
                done = await pool.fetchval("SELECT count(*) FROM requests WHERE id = ANY($1) AND status = 'DONE'", ids)
                return int(done) >= count

            await assert_eventually(lambda: ended(1), timeout=60, message="no delayed request ever ran")
            for role in ("relay-1", "relay-2", "worker-1"):
                stack.kill(role)
            for role in ("relay-1", "worker-1"):
                await stack.restart(role)
            await assert_eventually(lambda: ended(REQUESTS), timeout=120, message="delayed requests never ended")

            rows = await pool.fetch(
                "SELECT r.id, count(*) FILTER (WHERE e.topic = 'request.processing') AS starts,"
                "       count(*) FILTER (WHERE e.topic = 'request.done') AS dones,"
                "       bool_and(e.created_at >= r.scheduled_for)"
                "         FILTER (WHERE e.topic = 'request.processing') AS on_time"
                "  FROM requests r JOIN request_events e ON e.request_id = r.id"
                " WHERE r.id = ANY($1) GROUP BY r.id",
                ids,
            )
            assert len(rows) == REQUESTS
            wrong = [dict(row) for row in rows if (row["starts"], row["dones"], row["on_time"]) != (1, 1, True)]
            assert wrong == [], f"started twice, ended twice or started early: {wrong}"
        finally:
            await pool.close()
