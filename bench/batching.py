"""Scenario "batching": what starting one ProcessBatchWorkflow per claimed batch buys, against raw Temporal.

Each configuration is one value of ACKFLOW_BATCH_MAX (the relay is restarted with it; 1 is one
workflow a request, as before batches) beside raw Temporal (bench/raw_temporal.py, one workflow a
request), all in the same run:
* throughput: `clients` closed-loop senders POST `requests` echo requests (raw: start as many
  workflows); the sustained rate is completions a second over the middle 80 % of them, by the
  server's completion time (`requests.completed_at`; the workflow's close time). Each
  configuration's CPU per request, every process of the stack, from the first send until all are
  done; and the mean batch formed: its requests over the distinct `requests.workflow_id` among them.
* latency: POST -> DONE at a fixed open-loop rate of half the batched configuration's sustained
  rate, and at 10/s, for the default batch max and for 1.
* a burst of `burst` requests (default batch max) sent closed loop: all DONE, each with exactly one
  `request.done` event; its accept p99 against the same senders' accept p99 with nothing draining
  (relay stopped).
Every configuration's requests are told apart by their ids; nothing is truncated.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from temporalio.client import Client

from ackflow.settings import Settings
from bench.accept import client_pool, poster
from bench.closed_loop import run_closed_loop, sustained_rate
from bench.cpu import cpu_seconds, cpu_spent
from bench.end_to_end import RawTemporalTarget, drain
from bench.loadgen import Sample, Send, run_open_loop
from bench.profile import Profile
from bench.stack import RAW_TASK_QUEUE, Stack
from bench.stats import percentiles

LOW_RATE = 10.0
ACCEPT_CAP_FRACTION = 0.9
WAIT_SECONDS = 300.0  # for a configuration's requests to complete; what is not done by then counts as incomplete
COMPLETED = "SELECT count(*) FROM requests WHERE id = ANY($1::uuid[]) AND completed_at IS NOT NULL"
COMPLETED_AT = (
    "SELECT id::text, extract(epoch FROM completed_at)::float8 AS at FROM requests"
    " WHERE id = ANY($1::uuid[]) AND completed_at IS NOT NULL"
)
WORKFLOWS = "SELECT count(DISTINCT coalesce(workflow_id, 'request-' || id)) FROM requests WHERE id = ANY($1::uuid[])"
# Where a request's time went: commit -> admitted by the relay (batch formed), admitted -> DONE committed.
STAGES = (
    "SELECT extract(epoch FROM admitted_at - created_at)::float8 AS admit,"
    " extract(epoch FROM completed_at - admitted_at)::float8 AS run"
    " FROM requests WHERE id = ANY($1::uuid[]) AND completed_at IS NOT NULL"
)
# Per request of the burst: its row's status, and how many request.done events it has (exactly one each).
OUTCOMES = """
SELECT count(r.id) AS rows, count(*) FILTER (WHERE r.status = 'DONE') AS done,
       count(*) FILTER (WHERE e.n = 1) AS done_once, count(*) FILTER (WHERE e.n > 1) AS done_twice
  FROM unnest($1::uuid[]) AS i(id)
  LEFT JOIN requests r ON r.id = i.id
  LEFT JOIN (SELECT request_id, count(*) AS n FROM request_events
              WHERE request_id = ANY($1::uuid[]) AND topic = 'request.done' GROUP BY request_id) e
    ON e.request_id = i.id
"""

Log = Callable[[str], None]


def config_name(batch_max: int) -> str:
    """The results' key of one ACKFLOW_BATCH_MAX configuration."""
    return f"batch_max_{batch_max}"


async def measure_batching(stack: Stack, profile: Profile, log: Log) -> dict[str, Any]:
    """Closed-loop throughput, latency and CPU per configuration; the burst; ratios against raw Temporal."""
    batched = Settings().batch_max
    client = await Client.connect(stack.temporal_address)
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=4)
    try:
        async with client_pool(stack.gateway_url, stack.api_key) as http:
            post = poster(http)
            runs = {"temporal": await _raw_closed_loop(stack, client, profile, log)}
            for batch_max in profile.batching_batch_maxes:
                await _use_batch_max(stack, pool, post, batch_max)
                runs[config_name(batch_max)] = await _ackflow_closed_loop(stack, pool, post, batch_max, profile, log)
            half = round((runs.get(config_name(batched), {}).get("sustained_rate") or 2 * LOW_RATE) / 2, 1)
            latency = {}
            for batch_max in (batched, 1):
                await _use_batch_max(stack, pool, post, batch_max)
                log(f"  POST -> DONE, batch max {batch_max}:")
                steps = [await _latency_step(pool, post, rate, profile, log) for rate in (half, LOW_RATE)]
                latency[config_name(batch_max)] = steps
            burst = await _burst(stack, pool, post, batched, profile, log)
    finally:
        await pool.close()
        stack.ensure_role("relay", env={})
    return {
        "clients": profile.batching_clients,
        "requests": profile.batching_requests,
        "batched": config_name(batched),
        "closed_loop": runs,
        "ratios": _ratios(runs, batched),
        "half_rate": half,
        "latency": latency,
        "burst": burst,
    }


async def _use_batch_max(stack: Stack, pool: asyncpg.Pool, post: Send, batch_max: int) -> None:
    """Restart the relay with ACKFLOW_BATCH_MAX=batch_max, and wait until it relays."""
    stack.ensure_role("relay", env={"ACKFLOW_BATCH_MAX": str(batch_max)})
    step = await run_open_loop(post, 5, 1.0)
    await _wait_completed(pool, [s.ident for s in step.ok if s.ident])


async def _raw_closed_loop(stack: Stack, client: Client, profile: Profile, log: Log) -> dict[str, Any]:
    """Start the workflows closed loop on the raw worker; completion is each workflow's close time."""
    argv = [sys.executable, "-m", "bench.raw_temporal", stack.temporal_address, RAW_TASK_QUEUE]
    stack.start("raw-worker", argv, {}, lambda: True)
    try:
        warm = RawTemporalTarget(client)
        await run_open_loop(warm.send, 5, 1.0)
        await drain(warm)
        target = RawTemporalTarget(client)
        since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        query = f'TaskQueue = "{RAW_TASK_QUEUE}" AND ExecutionStatus = "Completed" AND StartTime >= "{since}"'
        pids = stack.pids()
        before = cpu_seconds(pids)
        samples = await run_closed_loop(target.send, profile.batching_clients, profile.batching_requests)

        async def all_closed() -> bool:
            return (await client.count_workflows(query)).count >= len(samples)

        await _until(all_closed)
        cpu = cpu_spent(before, cpu_seconds(pids))
        ids = [s.ident for s in samples if s.ok and s.ident]
        done = await target.completions(ids)
    finally:
        stack.stop("raw-worker")
    return _closed_loop_result(None, samples, done, len(ids), cpu, log)


async def _ackflow_closed_loop(
    stack: Stack, pool: asyncpg.Pool, post: Send, batch_max: int, profile: Profile, log: Log
) -> dict[str, Any]:
    """POST closed loop with the relay at `batch_max`; completion is `requests.completed_at`."""
    pids = stack.pids()
    before = cpu_seconds(pids)
    samples = await run_closed_loop(post, profile.batching_clients, profile.batching_requests)
    ids = [s.ident for s in samples if s.ok and s.ident]
    done = await _wait_completed(pool, ids)
    cpu = cpu_spent(before, cpu_seconds(pids))
    workflows = int(await pool.fetchval(WORKFLOWS, ids))
    return _closed_loop_result(batch_max, samples, done, workflows, cpu, log)


def _closed_loop_result(
    batch_max: int | None,
    samples: list[Sample],
    done: dict[str, float],
    workflows: int,
    cpu: dict[str, float],
    log: Log,
) -> dict[str, Any]:
    accepted = [s for s in samples if s.ok]
    first = min(s.due_wall for s in samples)
    accept_seconds = max(s.due_wall + s.latency for s in samples) - first
    sustained = sustained_rate(list(done.values()))
    per_request = {name: round(seconds * 1000 / len(done), 2) for name, seconds in sorted(cpu.items())} if done else {}
    result = {
        "batch_max": batch_max,
        "sent": len(samples),
        "errors": len(samples) - len(accepted),
        "completed": len(done),
        "accept_rate": round(len(accepted) / accept_seconds, 1),
        "accept_p99_ms": percentiles([s.latency for s in accepted]).p99,
        "sustained_rate": sustained,
        # Completions cannot outrun arrivals: near the accept rate, the senders were the limit, not the drain.
        "capped_by_accept": bool(sustained and sustained >= ACCEPT_CAP_FRACTION * len(accepted) / accept_seconds),
        "drain_seconds": round(max(done.values(), default=first) - first, 1),
        "workflows": workflows,
        "mean_batch": round(len(done) / workflows, 1) if workflows else None,
        "cpu_ms_per_request": per_request,
        "temporal_cpu_ms": per_request.get("temporal"),
        "total_cpu_ms": round(sum(per_request.values()), 1) if per_request else None,
    }
    log(
        f"  {config_name(batch_max) if batch_max else 'temporal':>13}: {result['completed']} of {len(samples)} done,"
        f" sustained {result['sustained_rate']}/s (accepted at {result['accept_rate']}/s),"
        f" mean batch {result['mean_batch']}, CPU per request Temporal {result['temporal_cpu_ms']} ms,"
        f" all {result['total_cpu_ms']} ms"
    )
    return result


async def _latency_step(pool: asyncpg.Pool, post: Send, rate: float, profile: Profile, log: Log) -> dict[str, Any]:
    """POST -> DONE at a fixed open-loop rate, from each request's due time; waits until all are done."""
    step = await run_open_loop(post, rate, profile.batching_latency_seconds)
    ids = [s.ident for s in step.ok if s.ident]
    done = await _wait_completed(pool, ids)
    latency = percentiles([done[s.ident] - s.due_wall for s in step.ok if s.ident in done])
    workflows = int(await pool.fetchval(WORKFLOWS, ids))
    stages = await pool.fetch(STAGES, ids)
    admit, run = percentiles([r["admit"] for r in stages]), percentiles([r["run"] for r in stages])
    log(
        f"    @ {rate:g}/s: POST -> DONE p50 {latency.p50} ms, p99 {latency.p99} ms (commit -> admitted p50"
        f" {admit.p50} ms, admitted -> DONE p50 {run.p50} ms), {workflows} workflows"
    )
    return {
        "rate": rate,
        "sent": len(step.samples),
        "errors": step.errors,
        "incomplete": len(ids) - len(done),
        "latency_ms": latency.as_dict(),
        "commit_to_admitted_ms": admit.as_dict(),
        "admitted_to_done_ms": run.as_dict(),
        "mean_batch": round(len(done) / workflows, 1) if workflows else None,
    }


async def _burst(
    stack: Stack, pool: asyncpg.Pool, post: Send, batch_max: int, profile: Profile, log: Log
) -> dict[str, Any]:
    """Accept p99 with nothing draining (relay stopped), then the burst, drained by a relay at `batch_max`."""
    stack.stop("relay")
    idle = await run_closed_loop(post, profile.batching_clients, profile.batching_idle_accepts)
    await _use_batch_max(stack, pool, post, batch_max)
    await _wait_completed(pool, [s.ident for s in idle if s.ok and s.ident])
    clock = time.monotonic()
    burst = await run_closed_loop(post, profile.batching_clients, profile.batching_burst)
    accept_seconds = time.monotonic() - clock
    ids = [s.ident for s in burst if s.ok and s.ident]
    done = await _wait_completed(pool, ids)
    drain_seconds = time.monotonic() - clock
    outcomes = dict(await pool.fetchrow(OUTCOMES, ids))
    idle_p99 = percentiles([s.latency for s in idle if s.ok]).p99
    burst_p99 = percentiles([s.latency for s in burst if s.ok]).p99
    result = {
        "sent": len(burst),
        "accepted": len(ids),
        "distinct": len(set(ids)),
        **outcomes,
        "lost": len(ids) - outcomes["done_once"] - outcomes["done_twice"],
        "accept_seconds": round(accept_seconds, 1),
        "all_done_seconds": round(drain_seconds, 1),
        "mean_batch": round(len(done) / int(await pool.fetchval(WORKFLOWS, ids)), 1) if done else None,
        "idle_accept_p99_ms": idle_p99,
        "burst_accept_p99_ms": burst_p99,
        "accept_p99_ratio": round(burst_p99 / idle_p99, 2) if burst_p99 and idle_p99 else None,
    }
    log(
        f"  burst of {len(burst)}: {outcomes['done']} DONE, {result['lost']} lost, {outcomes['done_twice']} twice;"
        f" accepted in {accept_seconds:.1f} s, all done in {drain_seconds:.1f} s; accept p99 {burst_p99} ms"
        f" (idle {idle_p99} ms)"
    )
    return result


async def _wait_completed(pool: asyncpg.Pool, ids: list[str]) -> dict[str, float]:
    """Until all of `ids` have completed (or WAIT_SECONDS passed): request id -> completed_at (epoch s)."""

    async def all_completed() -> bool:
        return int(await pool.fetchval(COMPLETED, ids)) >= len(ids)

    await _until(all_completed)
    rows = await pool.fetch(COMPLETED_AT, ids)
    return {row["id"]: row["at"] for row in rows}


async def _until(done: Callable[[], Awaitable[bool]]) -> None:
    """Poll `done` every half second until it says so, for up to WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if await done():
            return
        await asyncio.sleep(0.5)


def _ratios(runs: dict[str, dict[str, Any]], batched: int) -> dict[str, float | None]:
    """The batched configuration's sustained rate over raw Temporal's and over one workflow a request."""
    ours = runs.get(config_name(batched), {}).get("sustained_rate")

    def over(name: str) -> float | None:
        theirs = runs.get(name, {}).get("sustained_rate")
        return round(ours / theirs, 2) if ours and theirs else None

    return {"vs_temporal": over("temporal"), "vs_per_request": over(config_name(1))}
