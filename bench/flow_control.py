"""Scenario "flow_control": admission and accepts with 10,000 requests waiting across 1,000 concurrency
keys and three priorities (issue 16).

Two figures, each beside its baseline measured in the same run, with the relay stopped so that
nothing drains and both sides see the same tables:

* **Claim cost per request.** The relay's claim (`ackflow_claim_outbox`, as the relay calls it)
  runs repeatedly in a transaction rolled back each time, so each run claims the same rows: first
  with a plain backlog of `BASELINE_WAITING` requests (no keys, one priority), then with the keyed
  backlog (`WAITING` requests over `KEYS` keys of limit 1, priorities 1, 3 and 5: a thousand of them
  hold their key and are due, the rest wait for it). Each claims the same number of requests;
  its time and the buffers it touched (EXPLAIN ANALYZE BUFFERS) per claimed request are compared.
  Issue 16: flat, that is a ratio near 1.
* **Accept p99.** The same open-loop accepts (each with a random key of the thousand and a random
  priority) on the empty tables, then with the keyed backlog waiting. Issue 16: within 2x of idle.
"""

from __future__ import annotations

import random
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec

from bench.accept import clear_accepted, client_pool
from bench.backlog import create_backlog
from bench.httpool import ClientPool
from bench.loadgen import Send, run_open_loop
from bench.profile import Profile
from bench.stack import Stack

WAITING = 10_000
KEYS = 1_000
PRIORITIES = (1, 3, 5)
BASELINE_WAITING = 1_000  # as many due as the keyed backlog has key holders: both claims choose among as many
CLAIM = "SELECT * FROM ackflow_claim_outbox($1, $2, $3, $4)"  # as the relay runs it (claim_outbox)
CLAIM_BATCH, CLAIM_ROOM, CLAIM_LEASE, CLAIM_BATCH_MAX = 100, 200, 30.0, 50
CLAIM_RUNS = 30
DEFAULT_RATE = 200.0


async def measure_flow_control(
    stack: Stack, profile: Profile, log: Callable[[str], None], *, accept_max: float | None
) -> dict[str, Any]:
    rate = accept_max / 2 if accept_max else DEFAULT_RATE
    stack.stop("relay")
    try:
        await clear_accepted(stack.database_url)
        await _commit_waiting(stack.database_url, BASELINE_WAITING, keyed=False)
        baseline_claim = await _claim_cost(stack.database_url)
        await clear_accepted(stack.database_url)
        async with client_pool(stack.gateway_url, stack.api_key) as http:
            send = _keyed_poster(http)
            await run_open_loop(send, 100, 1.0)  # warm up: connections, caches, prepared statements
            await clear_accepted(stack.database_url)
            idle = await run_open_loop(send, rate, profile.backlog_seconds)
            await clear_accepted(stack.database_url)
            clock = time.monotonic()
            await _commit_waiting(stack.database_url, WAITING, keyed=True)
            log(f"  {WAITING:,} requests over {KEYS:,} keys committed in {time.monotonic() - clock:.1f} s")
            keyed_claim = await _claim_cost(stack.database_url)
            waiting = await run_open_loop(send, rate, profile.backlog_seconds)
    finally:
        await clear_accepted(stack.database_url)
    ratio = keyed_claim["ms_per_request"] / baseline_claim["ms_per_request"]
    pages_ratio = keyed_claim["pages_per_request"] / baseline_claim["pages_per_request"]
    idle_p99, waiting_p99 = idle.latency().p99, waiting.latency().p99
    p99_ratio = None if idle_p99 is None or waiting_p99 is None else waiting_p99 / max(idle_p99, 0.001)
    log(
        f"  claim per request: {baseline_claim['ms_per_request']:.3f} ms plain, {keyed_claim['ms_per_request']:.3f} ms"
        f" keyed (x{ratio:.2f}); pages x{pages_ratio:.2f}"
    )
    log(f"  accept p99 @ {rate:g}/s: idle {idle_p99} ms, {WAITING:,} waiting {waiting_p99} ms (x{_ratio(p99_ratio)})")
    return {
        "rate": rate,
        "waiting": WAITING,
        "keys": KEYS,
        "priorities": list(PRIORITIES),
        "claim": {"plain": baseline_claim, "keyed": keyed_claim},
        "claim_ratio": round(ratio, 2),
        "claim_pages_ratio": round(pages_ratio, 2),
        "idle": idle.summary(),
        "with_waiting": waiting.summary(),
        "accept_p99_ratio": None if p99_ratio is None else round(p99_ratio, 2),
    }


def _keyed_poster(pool: ClientPool) -> Send:
    """POST an echo request with a random key of KEYS and a random priority; its id on 202, else raise."""
    chance = random.Random(16)

    async def send() -> str | None:
        body = {
            "kind": "echo",
            "payload": {"hello": "world"},
            "concurrency_key": f"customer-{chance.randrange(KEYS)}",
            "priority": chance.choice(PRIORITIES),
        }
        async with pool.client() as http:
            response = await http.post("/v1/requests", content=msgspec.json.encode(body))
        if response.status_code != 202:
            raise RuntimeError(f"answered {response.status_code}")
        return str(response.json()["id"])

    return send


def _keyed(i: int) -> dict[str, Any]:
    """Round-robin over KEYS keys of limit 1 and over PRIORITIES."""
    return {"concurrency_key": f"customer-{i % KEYS}", "priority": PRIORITIES[i % len(PRIORITIES)]}


async def _commit_waiting(database_url: str, count: int, *, keyed: bool) -> None:
    """`count` waiting requests (keyed, or plain), then the outbox analysed as autovacuum would leave it."""
    await create_backlog(database_url, count, _keyed if keyed else None)
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("VACUUM ANALYZE outbox")
    finally:
        await connection.close()


async def _claim_cost(database_url: str) -> dict[str, float]:
    """The claim's median time and buffers per claimed request, over CLAIM_RUNS runs each rolled back."""
    connection = await asyncpg.connect(database_url)
    try:
        args = (CLAIM_BATCH, CLAIM_ROOM, CLAIM_LEASE, CLAIM_BATCH_MAX)
        times: list[float] = []
        claimed = 0
        for _ in range(CLAIM_RUNS):
            transaction = connection.transaction()
            await transaction.start()
            clock = time.perf_counter()
            rows = await connection.fetch(CLAIM, *args)
            times.append(time.perf_counter() - clock)
            await transaction.rollback()
            claimed = sum(len(msgspec.json.decode(r["payload"]).get("requests", [])) for r in rows)
        transaction = connection.transaction()
        await transaction.start()
        plan = "\n".join(r[0] for r in await connection.fetch("EXPLAIN (ANALYZE, BUFFERS) " + CLAIM, *args))
        await transaction.rollback()
        top = re.search(r"shared hit=(\d+)", plan)  # the top node's Buffers line: the whole claim's
        pages = int(top.group(1)) if top else 0
    finally:
        await connection.close()
    claimed = max(claimed, 1)
    median = statistics.median(times) * 1000
    return {
        "claimed": claimed,
        "ms_per_claim": round(median, 3),
        "ms_per_request": round(median / claimed, 4),
        "pages_per_request": round(pages / claimed, 2),
    }


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
