"""A closed-loop load generator, and the sustained rate of a run's completions.

Here each of `clients` senders sends its next request as soon as its last was answered, so the
work arrives as fast as the target accepts it: for an acknowledge-first target (a `202`, or
Temporal's answer to `start_workflow`) that is a burst, and what is measured afterwards is how
fast the backlog is worked off. The open-loop generator (bench/loadgen.py) measures latency at a
given rate; this one measures throughput at saturation.
"""

from __future__ import annotations

import asyncio
import time

from bench.loadgen import Sample, Send

MIDDLE = 0.8  # the share of completions the sustained rate is taken over (ramp-up and tail left out)


async def run_closed_loop(send: Send, clients: int, total: int, *, timeout: float = 10.0) -> list[Sample]:
    """`total` sends by `clients` concurrent senders; each sample's latency is its own send's answer time."""
    samples: list[Sample] = []
    remaining = iter(range(total))  # shared: each sender takes the next number until none are left

    async def sender() -> None:
        for _ in remaining:
            started = time.time()
            try:
                ident = await asyncio.wait_for(send(), timeout)
                ok = True
            except Exception:  # any failure is counted, never raised: the run goes on
                ident, ok = None, False
            samples.append(Sample(started, time.time() - started, 0.0, ok, ident))

    await asyncio.gather(*(sender() for _ in range(clients)))
    return samples


def sustained_rate(completed_at: list[float], middle: float = MIDDLE) -> float | None:
    """Completions a second between the first and last of the middle `middle` of them (by time)."""
    times = sorted(completed_at)
    edge = round(len(times) * (1 - middle) / 2)
    first, last = edge, len(times) - 1 - edge
    if last <= first or times[last] <= times[first]:
        return None
    return round((last - first) / (times[last] - times[first]), 1)
