"""PNG charts: latency percentiles over offered load, and throughput per stage beside its ceiling.

Needs the `bench` extra (matplotlib).
"""

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
    stages = throughput_per_stage(results)
    panels = len(scenarios) + (1 if stages else 0)
    if not panels:
        return None
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5), squeeze=False)
    for axis, scenario in zip(axes[0], scenarios, strict=False):
        _latency_panel(axis, scenario, results[scenario])
    if stages:
        _throughput_panel(axes[0][-1], stages)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def throughput_per_stage(results: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(stage, ackflow's rate, its ceiling's rate) for every stage measured in this run."""
    stages = []
    if "accept" in results:
        stages.append(("accept", results["accept"]["accept"]["max_rate"], results["accept"]["bare"]["max_rate"]))
    if "end_to_end" in results:
        e2e = results["end_to_end"]
        stages.append(("end to end", e2e["ackflow"]["max_rate"], e2e["temporal"]["max_rate"]))
    if "batching" in results:
        runs = results["batching"]["closed_loop"]
        batched = runs.get(results["batching"]["batched"], {}).get("sustained_rate")
        stages.append(("end to end, batched", batched or 0.0, runs.get("temporal", {}).get("sustained_rate") or 0.0))
    if "webhooks" in results:
        webhooks = results["webhooks"]
        stages.append(("webhook deliveries", webhooks["ackflow"]["rate"] or 0.0, webhooks["httpx"]["rate"] or 0.0))
    return stages


def _latency_panel(axis: Any, scenario: str, data: dict[str, Any]) -> None:
    for name, target in data.items():
        if not (isinstance(target, dict) and target.get("steps")):
            continue
        rates = [s["offered_rate"] for s in target["steps"]]
        for quantile, style in (("p50", "--"), ("p99", "-")):
            values = [s["latency_ms"][quantile] or float("nan") for s in target["steps"]]
            axis.plot(rates, values, style, marker="o", label=f"{name} {quantile}")
    axis.set_yscale("log")
    axis.set_xlabel("offered rate (requests/s)")
    axis.set_ylabel("latency from due time (ms)")
    axis.set_title(scenario.replace("_", " "))
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()


def _throughput_panel(axis: Any, stages: list[tuple[str, float, float]]) -> None:
    positions = range(len(stages))
    axis.bar([p - 0.2 for p in positions], [s[1] for s in stages], width=0.4, label="ackflow")
    axis.bar([p + 0.2 for p in positions], [s[2] for s in stages], width=0.4, label="ceiling, same run")
    axis.set_xticks(list(positions), [s[0] for s in stages])
    axis.set_yscale("log")
    axis.set_ylabel("sustained rate (per second)")
    axis.set_title("throughput per stage")
    axis.grid(True, axis="y", which="both", alpha=0.3)
    axis.legend()
