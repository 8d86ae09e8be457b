"""The results files: `<timestamp>.json` (everything), `<timestamp>.md` and `latest.md` (tables)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STEP_HEADER = (
    "| scenario | target | offered/s | achieved/s | p50 ms | p90 ms | p99 ms | max ms | errors "
    "| gen. lag p99 ms | ok |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n"
)


def headline(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, measured, issue 6's target) rows for the summary table."""
    rows: list[tuple[str, str, str]] = []
    accept = results.get("accept")
    if accept:
        a, b = accept["accept"], accept["bare"]
        rows.append(("accept max / bare INSERT max", _ratio(accept["ratio"], a, b), ">= 0.70"))
        half = a["half_max"]["latency_ms"]["p99"] if a["half_max"] else None
        rows.append(("accept p99 at half its max", f"{_num(half)} ms", "< 10 ms"))
        bare_half = b["half_max"]["latency_ms"]["p99"] if b["half_max"] else None
        rows.append(("bare INSERT p99 at half its max", f"{_num(bare_half)} ms", "(ceiling)"))
    e2e = results.get("end_to_end")
    if e2e:
        a, t = e2e["ackflow"], e2e["temporal"]
        rows.append(("end to end / raw Temporal", _ratio(e2e["ratio"], a, t), ">= 0.80"))
    notify = results.get("notify")
    if notify:
        for name, target in (("sse", "< 100 ms"), ("webhook", "< 250 ms")):
            p = notify[name]["latency_ms"]
            figure = f"DONE -> {name} p50 / p99 at {notify['rate']:g}/s"
            rows.append((figure, f"{_num(p['p50'])} / {_num(p['p99'])} ms", f"p99 {target}"))
    return rows


def markdown(results: dict[str, Any]) -> str:
    """The Markdown report: the headline table, then every step of every ramp."""
    meta = results["meta"]
    lines = [
        f"# ackflow benchmark, {meta['started']} ({meta['profile']} profile, {meta['duration_s']:.0f} s)\n",
        f"{meta['cpus']} CPUs, {meta['platform']}. Ratios compare targets measured in this same run.\n",
        "| figure | measured | target (issue 6) |",
        "| --- | --- | --- |",
        *[f"| {a} | {b} | {c} |" for a, b, c in headline(results)],
        "",
        "## Every step\n",
        STEP_HEADER.rstrip("\n"),
    ]
    for scenario in ("accept", "end_to_end"):
        for name, data in results.get(scenario, {}).items():
            if isinstance(data, dict) and "steps" in data:
                lines += [_step_row(scenario, name, step) for step in data["steps"]]
                if data.get("half_max"):
                    lines.append(_step_row(scenario, f"{name} (half max)", data["half_max"] | {"sustainable": None}))
    return "\n".join(lines) + "\n"


def _step_row(scenario: str, name: str, step: dict[str, Any]) -> str:
    lat = step["latency_ms"]
    verdict = {True: "yes", False: "**no**", None: ""}[step.get("sustainable")]
    cells = [
        scenario,
        name,
        f"{step['offered_rate']:g}",
        f"{step['achieved_rate']:g}",
        _num(lat["p50"]),
        _num(lat["p90"]),
        _num(lat["p99"]),
        _num(lat["max"]),
        str(step["errors"]),
        _num(step["generator_lag_ms"]["p99"]),
        verdict,
    ]
    return "| " + " | ".join(cells) + " |"


def _ratio(ratio: float | None, ours: dict[str, Any], ceiling: dict[str, Any]) -> str:
    return f"{_num(ratio)} ({ours['max_rate']:g} vs {ceiling['max_rate']:g} req/s)"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def write_results(out_dir: Path, stamp: str, results: dict[str, Any]) -> list[Path]:
    """Write the JSON, the Markdown and latest.md; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(results)
    paths = [out_dir / f"{stamp}.json", out_dir / f"{stamp}.md", out_dir / "latest.md"]
    paths[0].write_text(json.dumps(results, indent=2) + "\n")
    paths[1].write_text(text)
    paths[2].write_text(text)
    return paths
