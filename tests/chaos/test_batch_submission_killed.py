"""Batch submission while the gateway is SIGKILLed: senders post batches of 50 until the gateway dies
under them, and go on once it is back. Every batch is all or nothing: each one in Postgres holds exactly
the requests its row counts (one answered 202 holds all of them; one cut off by the kill holds none
or all), and every request accepted ends DONE, started once."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx

from ackflow.db.pool import create_pool
from tests.chaos.stack import running_stack, tenant_once_registered
from tests.helpers import assert_eventually

REPOSITORY = Path(__file__).resolve().parents[2]
SIZE = 50
SENDERS = 4


async def test_batches_posted_while_the_gateway_is_killed_are_each_all_or_nothing_and_all_run_once(
    chaos_root: Path,
) -> None:
    async with running_stack(chaos_root, {"PYTHONPATH": str(REPOSITORY)}) as stack:
        pool = await create_pool(stack.database_url, size=2)
        answered: list[str] = []  # batch ids answered 202
        stop = asyncio.Event()

        async def send(http: httpx.AsyncClient, sender: int) -> None:
            n = 0
            while not stop.is_set():
                items = [{"kind": "echo", "payload": {"sender": sender, "n": n, "i": i}} for i in range(SIZE)]
                n += 1
                with contextlib.suppress(httpx.TransportError):
                    response = await http.post("/v1/requests/batch", json={"items": items})
                    if response.status_code == 202:
                        answered.append(response.json()["id"])
                        continue
                await asyncio.sleep(0.05)  # the gateway is down or refused: try again shortly

        async def answered_at_least(count: int) -> bool:
            return len(answered) >= count

        try:
            tenant = await tenant_once_registered(pool, "batching", "echo")
            headers = {"Authorization": f"Bearer {tenant.key}"}
            async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=10) as http:
                senders = [asyncio.create_task(send(http, s)) for s in range(SENDERS)]
                await assert_eventually(lambda: answered_at_least(5), timeout=60, message="no batch was accepted")
                stack.kill("gateway")
                killed_at = len(answered)
                await stack.restart("gateway")
                await assert_eventually(
                    lambda: answered_at_least(killed_at + 5), timeout=60, message="no batch after the restart"
                )
                stop.set()
                await asyncio.gather(*senders)

            rows = await pool.fetch(
                "SELECT b.id, b.accepted, count(r.id) AS held FROM submitted_batches b"
                " LEFT JOIN requests r ON r.submitted_batch_id = b.id GROUP BY b.id, b.accepted"
            )
            assert {str(row["id"]) for row in rows} >= set(answered)
            assert [(row["accepted"], row["held"]) for row in rows] == [(SIZE, SIZE)] * len(rows)
            orphans = await pool.fetchval(
                "SELECT count(*) FROM requests r WHERE r.submitted_batch_id IS NOT NULL"
                " AND NOT EXISTS (SELECT FROM submitted_batches b WHERE b.id = r.submitted_batch_id)"
            )
            assert orphans == 0, "requests of a batch that was never recorded"

            async def all_done() -> bool:
                left = await pool.fetchval("SELECT count(*) FROM requests WHERE status <> 'DONE'")
                return int(left) == 0

            await assert_eventually(all_done, timeout=180, message="the batches' requests never all ended DONE")
            starts = await pool.fetch(
                "SELECT count(*) FILTER (WHERE e.topic = 'request.processing') AS n"
                "  FROM requests r JOIN request_events e ON e.request_id = r.id GROUP BY r.id"
            )
            assert {row["n"] for row in starts} == {1}
        finally:
            stop.set()
            await pool.close()
