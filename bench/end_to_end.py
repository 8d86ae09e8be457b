"""Scenario "end to end": POST -> DONE with the echo handler, vs raw Temporal, at the same rates.

Latency runs from each request's due time (open loop) to its completion as the server recorded it:
`requests.completed_at` for ackflow (DONE committed), the workflow's close time for raw Temporal.
After each step the harness waits a short grace for stragglers; a step is sustainable when 95 % of
its requests completed by then with p99 under the bound. Between steps everything drains, so one
step's backlog is not blamed on the next.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg
from temporalio.client import Client

from bench.accept import client_pool, poster
from bench.cpu import cpu_per_request, cpu_seconds, cpu_spent
from bench.loadgen import Send, Step, run_open_loop
from bench.profile import Profile
from bench.ramp import ramp_interleaved
from bench.raw_temporal import WORKFLOW_NAME
from bench.stack import RAW_TASK_QUEUE, Stack

DRAIN_TIMEOUT_SECONDS = 30.0


class Target(Protocol):
    """Something that takes work and says when each piece completed (wall clock)."""

    async def send(self) -> str | None: ...

    async def completions(self, idents: list[str]) -> dict[str, float]: ...

    async def pending(self) -> int: ...


class AckflowTarget:
    """POST echo requests; completion is `requests.completed_at`."""

    def __init__(self, post: Send, pool: asyncpg.Pool) -> None:
        self._post = post
        self._pool = pool

    async def send(self) -> str | None:
        return await self._post()

    async def completions(self, idents: list[str]) -> dict[str, float]:
        rows = await self._pool.fetch(
            "SELECT id::text, extract(epoch FROM completed_at)::float8 AS at FROM requests"
            " WHERE id = ANY($1::uuid[]) AND completed_at IS NOT NULL",
            idents,
        )
        return {row["id"]: row["at"] for row in rows}

    async def pending(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM requests WHERE completed_at IS NULL"))


class RawTemporalTarget:
    """Start the one-activity workflow directly; completion is its close time."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._started: set[str] = set()
        self._closed: dict[str, float] = {}
        self._since: datetime | None = None  # only list workflows started since the oldest unfinished one

    async def send(self) -> str | None:
        workflow_id = f"raw-{uuid.uuid4().hex}"
        if self._since is None:
            self._since = datetime.now(UTC) - timedelta(seconds=1)
        await self._client.start_workflow(WORKFLOW_NAME, "x", id=workflow_id, task_queue=RAW_TASK_QUEUE)
        self._started.add(workflow_id)
        return workflow_id

    async def completions(self, idents: list[str]) -> dict[str, float]:
        if self._since is None:
            return {}
        since = self._since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        query = f'TaskQueue = "{RAW_TASK_QUEUE}" AND ExecutionStatus = "Completed" AND StartTime >= "{since}"'
        async for execution in self._client.list_workflows(query):
            if execution.id not in self._closed and execution.close_time is not None:
                self._closed[execution.id] = execution.close_time.timestamp()
        if not self._started - self._closed.keys():
            self._since = None
        return {ident: self._closed[ident] for ident in idents if ident in self._closed}

    async def pending(self) -> int:
        await self.completions([])
        return len(self._started - self._closed.keys())


async def run_step(target: Target, rate: float, profile: Profile, pids: dict[str, int] | None = None) -> Step:
    """Send at `rate`, wait the grace, and turn each sample's latency into due -> completed.

    With `pids`, the step also records each process's CPU from the first send until all drained.
    """
    cpu_before = cpu_seconds(pids or {})
    step = await run_open_loop(target.send, rate, profile.e2e_step_seconds)
    idents = [s.ident for s in step.ok if s.ident]
    deadline = time.monotonic() + profile.e2e_grace_seconds
    done: dict[str, float] = {}
    while time.monotonic() < deadline and len(done) < len(idents):
        await asyncio.sleep(0.25)
        done = await target.completions(idents)
    for sample in step.samples:
        completed = done.get(sample.ident or "")
        sample.ok = sample.ok and completed is not None
        sample.latency = (completed - sample.due_wall) if completed is not None else float("inf")
    finished = [s.due_wall + s.latency for s in step.ok]
    step.elapsed = (max(finished) - min(s.due_wall for s in step.samples)) if finished else step.duration
    await drain(target)
    step.cpu = cpu_spent(cpu_before, cpu_seconds(pids or {}))
    return step


async def drain(target: Target) -> None:
    """Wait until the target has nothing in flight (bounded), so the next step starts clean."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not await target.pending():
            return
        await asyncio.sleep(0.5)


async def measure_end_to_end(stack: Stack, profile: Profile, log: Callable[[str], None]) -> dict[str, Any]:
    """Ramp raw Temporal and ackflow side by side; the ratio of their sustained rates."""
    raw_worker = [sys.executable, "-m", "bench.raw_temporal", stack.temporal_address, RAW_TASK_QUEUE]
    stack.start("raw-worker", raw_worker, {}, lambda: True)
    client = await Client.connect(stack.temporal_address)
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=4)
    try:
        async with client_pool(stack.gateway_url, stack.api_key) as http:
            targets: dict[str, Target] = {
                "temporal": RawTemporalTarget(client),
                "ackflow": AckflowTarget(poster(http), pool),
            }
            for target in targets.values():  # warm up: first workflow tasks, caches, connections
                await run_open_loop(target.send, 5, 1.0)
                await drain(target)
            pids = stack.pids()
            ramps = await ramp_interleaved(
                {name: _stepper(target, profile, pids) for name, target in targets.items()},
                profile.e2e_rates,
                profile.e2e_p99_bound_ms,
                log=log,
            )
    finally:
        await pool.close()
        stack.stop("raw-worker")
    result: dict[str, Any] = {"p99_bound_ms": profile.e2e_p99_bound_ms, "grace_s": profile.e2e_grace_seconds}
    # CPU per request compares like with like: over the rates that both sustained (it rises with load).
    common = min(ramp.max_rate for ramp in ramps.values())
    for name, ramp in ramps.items():
        result[name] = {
            "max_rate": ramp.max_rate,
            "capped_by_ramp": not ramp.broke,
            "steps": [s.summary() | {"sustainable": ok} for s, ok in zip(ramp.steps, ramp.verdicts, strict=True)],
            "cpu_ms_per_request": cpu_per_request([s for s in ramp.sustained if s.offered_rate <= common]),
        }
    raw_max = result["temporal"]["max_rate"]
    result["ratio"] = round(result["ackflow"]["max_rate"] / raw_max, 3) if raw_max else None
    return result


def _stepper(target: Target, profile: Profile, pids: dict[str, int]) -> Callable[[float], Any]:
    async def run(rate: float) -> Step:
        return await run_step(target, rate, profile, pids)

    return run
