"""Concurrency keys while a relay and a worker are SIGKILLed mid-run: requests of three keys (limits
1, 1 and 2) run through two relays and two workers; one of each is killed while handlers run and
started again. Watched all along in Postgres, no key ever has more holders, or more requests
PROCESSING, than its limit; every request ends DONE, started once; no slot outlives its requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from ackflow.db.accept import accept_request
from ackflow.db.pool import create_pool
from ackflow.ids import new_request_id
from tests.chaos.stack import running_stack, tenant_once_registered
from tests.helpers import assert_eventually

REPOSITORY = Path(__file__).resolve().parents[2]
LIMITS = {"customer-a": 1, "customer-b": 1, "customer-c": 2}
EACH = 8


async def over_limit(pool: asyncpg.Pool) -> list[tuple[str, int, int]]:
    """Keys with more holders, or more requests PROCESSING, than their limit: (key, holders, processing)."""
    rows = await pool.fetch(
        "SELECT concurrency_key AS key, count(*) FILTER (WHERE key_slot AND completed_at IS NULL) AS holders,"
        "       count(*) FILTER (WHERE status = 'PROCESSING') AS processing"
        "  FROM requests WHERE concurrency_key IS NOT NULL GROUP BY concurrency_key"
    )
    return [
        (row["key"], row["holders"], row["processing"])
        for row in rows
        if max(row["holders"], row["processing"]) > LIMITS[row["key"]]
    ]


async def test_concurrency_key_limits_hold_while_a_relay_and_a_worker_are_killed(chaos_root: Path) -> None:
    async with running_stack(chaos_root, {"PYTHONPATH": str(REPOSITORY)}) as stack:
        pool = await create_pool(stack.database_url, size=3)
        stop, seen_over = asyncio.Event(), []

        async def watch() -> None:
            while not stop.is_set():
                seen_over.extend(await over_limit(pool))
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        try:
            tenant = await tenant_once_registered(pool, "keyed", "sleep")
            ids = []
            for _ in range(EACH):
                for key, limit in LIMITS.items():
                    row = await accept_request(
                        pool,
                        new_request_id(),
                        tenant.tenant_id,
                        "sleep",
                        {"seconds": 0.4},
                        concurrency_key=key,
                        concurrency_limit=limit,
                    )
                    assert row is not None
                    ids.append(row["id"])

            async def some_running() -> bool:
                return bool(await pool.fetchval("SELECT count(*) FROM requests WHERE status = 'PROCESSING'"))

            for role in ("worker-1", "relay-1"):
                await assert_eventually(some_running, timeout=60, message="no request was running to kill")
                stack.kill(role)
            await stack.restart("relay-1")
            await stack.restart("worker-1")

            async def all_ended() -> bool:
                ended = await pool.fetchval(
                    "SELECT count(*) FROM requests WHERE id = ANY($1) AND completed_at IS NOT NULL", ids
                )
                return int(ended) == len(ids)

            await assert_eventually(all_ended, timeout=180, message="the keyed requests never all ended")
            stop.set()
            await watcher
            rows = await pool.fetch(
                "SELECT r.status, count(*) FILTER (WHERE e.topic = 'request.processing') AS starts"
                "  FROM requests r JOIN request_events e ON e.request_id = r.id"
                " WHERE r.id = ANY($1) GROUP BY r.id, r.status",
                ids,
            )
            assert [(row["status"], row["starts"]) for row in rows] == [("DONE", 1)] * len(ids)
            assert seen_over == [], f"a key ran more than its limit: {seen_over[:5]}"
            assert await pool.fetchval("SELECT count(*) FROM concurrency_slots") == 0, "a slot outlived its requests"
        finally:
            stop.set()
            await asyncio.gather(watcher, return_exceptions=True)
            await pool.close()
