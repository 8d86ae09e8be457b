"""Expiry while every worker is SIGKILLed: requests admitted into batches whose workers died expire
meanwhile; once a worker is back, each expired one ends CANCELLED (Expired) without ever starting, and
each one that had not expired runs to DONE, once."""

from __future__ import annotations

from pathlib import Path

from ackflow.db.accept import accept_request
from ackflow.db.pool import create_pool
from ackflow.ids import new_request_id
from tests.chaos.stack import running_stack, tenant_once_registered
from tests.helpers import assert_eventually

REPOSITORY = Path(__file__).resolve().parents[2]
EACH = 10


async def test_requests_that_expire_while_the_workers_are_killed_never_start_and_the_others_run_once(
    chaos_root: Path,
) -> None:
    async with running_stack(chaos_root, {"PYTHONPATH": str(REPOSITORY)}) as stack:
        pool = await create_pool(stack.database_url, size=2)
        try:
            tenant = await tenant_once_registered(pool, "expiring", "echo")
            for worker in ("worker-1", "worker-2"):
                stack.kill(worker)
            short, long = [new_request_id() for _ in range(EACH)], [new_request_id() for _ in range(EACH)]
            for request_id, ttl in [*((i, 3.0) for i in short), *((i, 600.0) for i in long)]:
                row = await accept_request(pool, request_id, tenant.tenant_id, "echo", {}, ttl_seconds=ttl)
                assert row is not None

            async def expired_unstarted() -> bool:
                return bool(
                    await pool.fetchval(
                        "SELECT now() > max(expires_at) AND bool_and(status IN ('INIT', 'CANCELLED'))"
                        "  FROM requests WHERE id = ANY($1)",
                        short,
                    )
                )

            await assert_eventually(expired_unstarted, timeout=60, message="the short requests never expired")
            await stack.restart("worker-1")

            async def all_ended() -> bool:
                ended = await pool.fetchval(
                    "SELECT count(*) FROM requests WHERE id = ANY($1) AND completed_at IS NOT NULL", short + long
                )
                return int(ended) == 2 * EACH

            await assert_eventually(all_ended, timeout=120, message="the requests never all ended")
            rows = await pool.fetch(
                "SELECT r.id, r.status, r.error ->> 'type' AS type,"
                "       count(*) FILTER (WHERE e.topic = 'request.processing') AS starts,"
                "       count(*) FILTER (WHERE e.topic IN ('request.done', 'request.cancelled')) AS ends"
                "  FROM requests r JOIN request_events e ON e.request_id = r.id"
                " WHERE r.id = ANY($1) GROUP BY r.id",
                short + long,
            )
            outcome = {row["id"]: (row["status"], row["type"], row["starts"], row["ends"]) for row in rows}
            wrong = [(i, outcome.get(i)) for i in short if outcome.get(i) != ("CANCELLED", "Expired", 0, 1)]
            wrong += [(i, outcome.get(i)) for i in long if outcome.get(i) != ("DONE", None, 1, 1)]
            assert wrong == [], f"expired ones started, or others did not run once: {wrong}"
        finally:
            await pool.close()
