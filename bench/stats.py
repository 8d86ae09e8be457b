"""Percentiles of a list of durations, in milliseconds, the way every table in the results shows them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Percentiles:
    """p50/p90/p99/max in milliseconds of `count` values (all None when there were none)."""

    count: int
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentiles(seconds: list[float]) -> Percentiles:
    """Nearest-rank percentiles of `seconds`, reported in milliseconds."""
    if not seconds:
        return Percentiles(0, None, None, None, None)
    ordered = sorted(seconds)

    def rank(q: float) -> float:
        index = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))
        return round(ordered[index] * 1000, 2)

    return Percentiles(len(ordered), rank(0.50), rank(0.90), rank(0.99), round(ordered[-1] * 1000, 2))
