"""An open-loop load generator: requests leave on a fixed schedule, never waiting for earlier ones.

A closed-loop client (send, wait, send) slows down when the server does, which hides queueing: the
latency it reports is the server's service time, not what a user arriving at that rate would see.
Here request `i` is due at `start + i / rate`; its latency runs from that due time to its answer, so
time spent waiting for a free connection, or in the server's backlog, is counted. `lag` (due time ->
the moment the generator actually started sending) shows when the generator itself fell behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.stats import Percentiles, percentiles

# What one send does: returns an identifier of what it created (None if none), raises on failure.
Send = Callable[[], Awaitable[str | None]]


@dataclass
class Sample:
    """One request: when it was due (wall clock), how long from then to its answer, and its outcome."""

    due_wall: float
    latency: float
    lag: float
    ok: bool
    ident: str | None = None


@dataclass
class Step:
    """The outcome of one fixed-rate run."""

    offered_rate: float
    duration: float
    samples: list[Sample] = field(default_factory=list)
    elapsed: float = 0.0  # from the first due time to the last answer
    dropped: int = 0  # not sent because too many were already in flight
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process over the step, if measured

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]

    @property
    def errors(self) -> int:
        return len(self.samples) - len(self.ok) + self.dropped

    @property
    def achieved_rate(self) -> float:
        """Successful answers a second, over the time until the last answer came back."""
        return len(self.ok) / max(self.elapsed, self.duration)

    def latency(self) -> Percentiles:
        return percentiles([s.latency for s in self.ok])

    def lag(self) -> Percentiles:
        return percentiles([s.lag for s in self.samples])

    def cpu_ms_per_request(self) -> dict[str, float]:
        """Each process's CPU over the step, in milliseconds per successful request."""
        done = len(self.ok)
        return {name: round(seconds * 1000 / done, 2) for name, seconds in self.cpu.items()} if done else {}

    def summary(self) -> dict[str, Any]:
        """What the results file keeps of a step (not every sample)."""
        return {
            "offered_rate": self.offered_rate,
            "duration_s": self.duration,
            "sent": len(self.samples),
            "achieved_rate": round(self.achieved_rate, 1),
            "errors": self.errors,
            "latency_ms": self.latency().as_dict(),
            "generator_lag_ms": self.lag().as_dict(),
        } | ({"cpu_ms_per_request": self.cpu_ms_per_request()} if self.cpu else {})


async def run_open_loop(
    send: Send, rate: float, duration: float, *, max_in_flight: int = 2000, timeout: float = 10.0
) -> Step:
    """Send at `rate` a second for `duration` seconds; wait (up to `timeout`) for the stragglers."""
    step = Step(rate, duration)
    total = max(1, round(rate * duration))
    start = time.perf_counter() + 0.05
    wall_offset = time.time() - time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()
    for i in range(total):
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))  # sleep(0) still lets answers in
        if len(tasks) >= max_in_flight:
            step.dropped += 1
            continue
        task = asyncio.create_task(_one(send, due, wall_offset, timeout, step.samples))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)
    step.elapsed = max((s.due_wall - wall_offset + s.latency for s in step.samples), default=start) - start
    return step


async def _one(send: Send, due: float, wall_offset: float, timeout: float, samples: list[Sample]) -> None:
    lag = time.perf_counter() - due
    try:
        ident = await asyncio.wait_for(send(), timeout)
        ok = True
    except Exception:  # any failure is counted, never raised: the run goes on
        ident, ok = None, False
    samples.append(Sample(due + wall_offset, time.perf_counter() - due, lag, ok, ident))
