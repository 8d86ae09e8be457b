"""Scenario "backlog": accept latency while 10,000 accepted requests drain behind it.

Issue 6 wants accepts to stay fast (p99 < 10 ms at half of accept's max) while a backlog drains.
The same open-loop accept load runs twice, a few seconds each: first on the idle stack (relay
stopped, so nothing drains) as the baseline, then with the backlog waiting in the outbox and the relay
and worker busy draining it. The relay admits at most ACKFLOW_RELAY_MAX_IN_FLIGHT workflows at a
time and Temporal finishes them at its own pace, so the backlog is far from drained when the
measurement ends; how many requests completed during it is the drain rate.

The backlog is committed in one transaction by the accept path's own statement (`accept_request`):
the same rows as 10,000 POSTs, in a second or two instead of the half minute the POSTs would take.
Afterwards the relay is stopped, the workflows it started are left to finish (so they do not load
Temporal during later scenarios), and the tables are emptied.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from ackflow.db.accept import accept_request
from ackflow.db.pool import connect
from ackflow.db.queries import sql
from ackflow.ids import new_request_id
from bench.accept import clear_accepted, client_pool, poster
from bench.cpu import CoresInUse
from bench.loadgen import run_open_loop
from bench.profile import Profile
from bench.stack import Stack

# Half of the accept max measured on the 2-core development machine, when the accept scenario did not run.
DEFAULT_RATE = 200.0
TENANT = "bench"  # the tenant bench/stack.py creates
SETTLE_SECONDS = 30.0
COMPLETED = "SELECT count(*) FROM requests WHERE completed_at IS NOT NULL"
# As the relay's admission counts them (ackflow_claim_outbox, migration 0009).
WORKFLOWS_IN_FLIGHT = "SELECT count(*) FROM requests WHERE admitted_at IS NOT NULL AND completed_at IS NULL"


async def measure_backlog(
    stack: Stack, profile: Profile, log: Callable[[str], None], *, accept_max: float | None
) -> dict[str, Any]:
    """Accept at half of `accept_max` on the idle stack, then while the backlog drains."""
    rate = accept_max / 2 if accept_max else DEFAULT_RATE
    stack.stop("relay")
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
    try:
        async with client_pool(stack.gateway_url, stack.api_key) as http:
            post = poster(http)
            await run_open_loop(post, 100, 1.0)  # warm up: connections, caches, prepared statements
            with CoresInUse(stack.pids()) as idle_cores:
                idle = await run_open_loop(post, rate, profile.backlog_seconds)
            log(f"  idle          @ {rate:g}/s: p50 {idle.latency().p50} ms, p99 {idle.latency().p99} ms")
            await clear_accepted(stack.database_url)
            clock = time.monotonic()
            await create_backlog(stack.database_url, profile.backlog_size)
            log(f"  {profile.backlog_size} requests committed in {time.monotonic() - clock:.1f} s")
            stack.ensure_role("relay")
            await _wait_for(pool, COMPLETED, lambda completed: completed > 0)  # draining is under way
            done_before = await pool.fetchval(COMPLETED)
            clock = time.monotonic()
            with CoresInUse(stack.pids()) as draining_cores:
                draining = await run_open_loop(post, rate, profile.backlog_seconds)
            drained = await pool.fetchval(COMPLETED) - done_before
            drain_rate = drained / (time.monotonic() - clock)
            log(
                f"  draining      @ {rate:g}/s: p50 {draining.latency().p50} ms, p99 {draining.latency().p99} ms;"
                f" {drained} of the backlog completed meanwhile ({drain_rate:.1f}/s);"
                f" cores in use {idle_cores.total} idle, {draining_cores.total} draining, of {os.cpu_count()}"
            )
    finally:
        stack.stop("relay")
        await _wait_for(pool, WORKFLOWS_IN_FLIGHT, lambda in_flight: in_flight == 0)
        await pool.close()
        await clear_accepted(stack.database_url)
    return {
        "rate": rate,
        "backlog": profile.backlog_size,
        "idle": idle.summary(),
        "draining": draining.summary(),
        "drained": drained,
        "drain_rate": round(drain_rate, 1),
        "cores": os.cpu_count(),
        "cores_in_use": {"idle": idle_cores.by_process, "draining": draining_cores.by_process},
    }


async def create_backlog(
    database_url: str, count: int, controls: Callable[[int], dict[str, Any]] | None = None
) -> None:
    """`count` accepted echo requests of the bench tenant, committed together, exactly as accepts write
    them; the i-th with `controls(i)` (accept_request's keyword arguments: a concurrency key, say)."""
    connection = await connect(database_url)
    try:
        tenant_id = await connection.fetchval(sql("tenant_by_name"), TENANT)
        async with connection.transaction():
            for i in range(count):
                given = controls(i) if controls else {}
                row = await accept_request(connection, new_request_id(), tenant_id, "echo", {"backlog": i}, **given)
                assert row is not None, "no worker has registered the echo kind"
    finally:
        await connection.close()


async def _wait_for(pool: asyncpg.Pool, count_query: str, done: Callable[[int], bool]) -> None:
    """Until the count `count_query` returns is `done`, for up to SETTLE_SECONDS."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        if done(await pool.fetchval(count_query)):
            return
        await asyncio.sleep(0.1)
