"""The batching scenario's part of the report: headline rows, and its table of configurations."""

from __future__ import annotations

from typing import Any

LATENCY_HEADER = "p50 / p99 ms (mean batch)"


def batching_headline(batching: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """The batched configuration against raw Temporal and against one workflow a request; the burst's checks."""
    if not batching:
        return []
    runs, ratios, burst = batching["closed_loop"], batching["ratios"], batching["burst"]
    ours = runs.get(batching["batched"], {})
    batched = batching["batched"].replace("_", " ")
    rows = []
    for key, name, figure in (
        ("vs_temporal", "temporal", "raw Temporal"),
        ("vs_per_request", "batch_max_1", "batch max 1"),
    ):
        if name in runs:
            measured = (
                f"{_num(ratios[key])} ({_num(ours.get('sustained_rate'))} vs {_num(runs[name]['sustained_rate'])}/s)"
            )
            rows.append((f"DONE/s closed loop, {batched} / {figure}", measured, "(issue 12)"))
    rows += [
        (
            f"burst of {burst['sent']:,}: DONE / lost / done twice",
            f"{burst['done']} / {burst['lost']} / {burst['done_twice']} (all done in {burst['all_done_seconds']:g} s)",
            "all DONE, none lost or twice",
        ),
        (
            "accept p99 during the burst / with nothing draining",
            f"{_num(burst['accept_p99_ratio'])} ({_num(burst['burst_accept_p99_ms'])} vs "
            f"{_num(burst['idle_accept_p99_ms'])} ms)",
            "(issue 12)",
        ),
    ]
    return rows


def batching_table(batching: dict[str, Any] | None) -> list[str]:
    """One row per configuration: throughput, batch formed, CPU per request, latency at two rates."""
    if not batching:
        return []
    half = batching["half_rate"]
    lines = [
        "## Batching\n",
        f"{batching['clients']} closed-loop senders, {batching['requests']:,} echo requests per configuration;"
        " DONE/s over the middle 80 % of completions; CPU per request of every process of the stack, first send"
        f" to last completion. POST -> DONE open loop at half of {batching['batched'].replace('_', ' ')}'s rate"
        f" ({half:g}/s) and at 10/s. *accept-bound*: completions kept pace with the senders' accepts, so the"
        " drain could go faster.\n",
        "| configuration | DONE/s | / raw Temporal | accepted/s | mean batch | Temporal CPU ms/req | all CPU ms/req "
        f"| {half:g}/s: {LATENCY_HEADER} | 10/s: {LATENCY_HEADER} |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    raw = batching["closed_loop"].get("temporal", {}).get("sustained_rate")
    for name, run in batching["closed_loop"].items():
        steps = batching["latency"].get(name, [])
        sustained = _num(run["sustained_rate"]) + (" *accept-bound*" if run.get("capped_by_accept") else "")
        ratio = round(run["sustained_rate"] / raw, 2) if raw and run["sustained_rate"] else None
        cells = [
            "raw Temporal" if name == "temporal" else name.replace("_", " "),
            sustained,
            _num(ratio),
            _num(run["accept_rate"]),
            _num(run["mean_batch"]),
            _num(run["temporal_cpu_ms"]),
            _num(run["total_cpu_ms"]),
            *([_latency(step) for step in steps] or ["", ""]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _latency(step: dict[str, Any]) -> str:
    p = step["latency_ms"]
    incomplete = f", {step['incomplete']} not done" if step.get("incomplete") else ""
    return f"{_num(p['p50'])} / {_num(p['p99'])} ({_num(step['mean_batch'])}{incomplete})"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"
