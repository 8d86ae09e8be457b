"""Find a target's highest sustainable rate by stepping the offered rate up until it breaks.

A step is sustainable when the target answered at least 95 % of the offered rate, failed fewer than
1 % of requests, and kept p99 latency under a bound. The highest sustainable step is the target's
max; the ramp stops at the first step that fails twice in a row (one retry, because a single
stall of a shared machine would otherwise decide the whole ramp). Two targets ramp interleaved
(A at r, B at r, A at the next r, ...) so that drift on a shared machine hits both alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bench.loadgen import Step

MIN_ACHIEVED_FRACTION = 0.95
MAX_ERROR_FRACTION = 0.01

# Runs one step at the given rate; returns its outcome.
RunStep = Callable[[float], Awaitable[Step]]


def sustainable(step: Step, p99_bound_ms: float) -> bool:
    """Did this step keep up with its offered rate, without errors, within the latency bound?"""
    offered = max(1, round(step.offered_rate * step.duration))
    p99 = step.latency().p99
    return (
        step.achieved_rate >= MIN_ACHIEVED_FRACTION * step.offered_rate
        and step.errors <= MAX_ERROR_FRACTION * offered
        and p99 is not None
        and p99 <= p99_bound_ms
    )


@dataclass
class Ramp:
    """One target's steps, and the highest rate it sustained (0 if none)."""

    name: str
    steps: list[Step] = field(default_factory=list)
    verdicts: list[bool] = field(default_factory=list)
    max_rate: float = 0.0
    broke: bool = False

    @property
    def sustained(self) -> list[Step]:
        """The steps that were sustainable."""
        return [step for step, ok in zip(self.steps, self.verdicts, strict=True) if ok]


async def ramp_interleaved(
    targets: dict[str, RunStep], rates: Sequence[float], p99_bound_ms: float, *, log: Callable[[str], None]
) -> dict[str, Ramp]:
    """Step every target through `rates` in turn until each one breaks."""
    ramps = {name: Ramp(name) for name in targets}
    for rate in rates:
        for name, run in targets.items():
            ramp = ramps[name]
            if ramp.broke:
                continue
            for _attempt in range(2):  # a step that breaks gets one retry before it counts
                step = await run(rate)
                ok = sustainable(step, p99_bound_ms)
                ramp.steps.append(step)
                ramp.verdicts.append(ok)
                lat = step.latency()
                log(
                    f"  {name:>8} @ {rate:>6.0f}/s: achieved {step.achieved_rate:7.1f}/s, p50 {lat.p50} ms, "
                    f"p99 {lat.p99} ms, errors {step.errors}, generator lag p99 {step.lag().p99} ms -> "
                    f"{'ok' if ok else 'BROKE'}"
                )
                if ok:
                    break
            if ok:
                ramp.max_rate = rate
            else:
                ramp.broke = True
        if all(r.broke for r in ramps.values()):
            break
    return ramps
