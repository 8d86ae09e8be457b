"""PNG charts of latency percentiles over offered load (needs the `bench` extra: matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_chart(results: dict[str, Any], path: Path) -> Path | None:
    """One panel per ramped scenario: p50 and p99 against offered rate, per target. None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    scenarios = [name for name in ("accept", "end_to_end") if name in results]
    if not scenarios:
        return None
    figure, axes = plt.subplots(1, len(scenarios), figsize=(6 * len(scenarios), 4.5), squeeze=False)
    for axis, scenario in zip(axes[0], scenarios, strict=True):
        for name, data in results[scenario].items():
            if not (isinstance(data, dict) and data.get("steps")):
                continue
            rates = [s["offered_rate"] for s in data["steps"]]
            for quantile, style in (("p50", "--"), ("p99", "-")):
                values = [s["latency_ms"][quantile] or float("nan") for s in data["steps"]]
                axis.plot(rates, values, style, marker="o", label=f"{name} {quantile}")
        axis.set_yscale("log")
        axis.set_xlabel("offered rate (requests/s)")
        axis.set_ylabel("latency from due time (ms)")
        axis.set_title(scenario.replace("_", " "))
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
