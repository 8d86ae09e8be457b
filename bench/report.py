"""The results files: `latest.json` (every step) and `latest.md` (tables), the latest measurement of each scenario.

A run replaces the scenarios it measured and keeps the others' last figures, so `--only` runs keep
the set whole; `runs` in the JSON (and the table atop the Markdown) says which run measured each.
Nothing else is written, so results do not pile up: their history is bench/CHANGELOG.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report_batching import batching_headline, batching_table

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
        ours, bare = a.get("cpu_ms_per_request") or {}, b.get("cpu_ms_per_request") or {}
        if ours and bare:
            rows.append(
                (
                    "CPU per request: HTTP server + Postgres, accept vs bare",
                    f"{_num(ours.get('gateway'))} + {_num(ours.get('postgres'))} vs "
                    f"{_num(bare.get('bare'))} + {_num(bare.get('postgres'))} ms",
                    "(why the ratio is what it is)",
                )
            )
    rows += _backlog_rows(results.get("backlog"))
    rows += _flow_control_rows(results.get("flow_control"))
    e2e = results.get("end_to_end")
    if e2e:
        a, t = e2e["ackflow"], e2e["temporal"]
        rows.append(("end to end / raw Temporal", _ratio(e2e["ratio"], a, t), ">= 0.80"))
        rows += _cpu_rows(a.get("cpu_ms_per_request") or {}, t.get("cpu_ms_per_request") or {})
    rows += _relay_lag_rows(results.get("relay_lag"))
    rows += _notify_rows(results.get("notify"))
    rows += _fanout_rows(results.get("fanout"))
    rows += _webhook_rate_rows(results.get("webhooks"))
    rows += batching_headline(results.get("batching"))
    return rows


# Each channel of the notification scenario: its figure's name, and issue 6's target (at half of max).
NOTIFY_FIGURES = {
    "sse": ("DONE -> SSE client", "p99 < 100 ms at 50 %"),
    "webhook": ("DONE -> webhook receiver", "p99 < 250 ms at 50 %"),
    "post_to_done_seen": ("POST -> DONE seen on SSE", "p99 < 200 ms at 50 %"),
}


def _notify_rows(notify: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """Per channel: p50 / p99 at each fraction of the sustained end-to-end rate."""
    if not notify:
        return []
    rows = []
    for name, (figure, target) in NOTIFY_FIGURES.items():
        cells = [
            f"{step['rate'] / notify['sustained']:.0%} ({step['rate']:g}/s): "
            f"{_num(step[name]['latency_ms']['p50'])} / {_num(step[name]['latency_ms']['p99'])}"
            for step in notify["steps"]
        ]
        rows.append((f"{figure}, p50 / p99 ms", "; ".join(cells), target))
    return rows


def _fanout_rows(fanout: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """Per size: the gateway's memory with N idle SSE clients, and DONE -> every one of them."""
    rows: list[tuple[str, str, str]] = []
    for r in (fanout or {}).get("rounds", []):
        n = f"{r['clients']:,}"
        memory = f"{r['rss_connected_mib']:g} MiB, {_num(r['kib_per_client'])} KiB/client ({r['failed']} failed)"
        rows.append((f"gateway RSS with {n} idle SSE clients", memory, "< 1 GiB at 10,000 clients"))
        p = r["latency_ms"]
        got = f"{_num(p['p50'])} / {_num(p['p99'])} ms ({r['received']} of {r['connected']} received)"
        rows.append((f"DONE -> all {n} SSE clients p50 / p99", got, "p99 < 1 s at 10,000 clients"))
    return rows


def _webhook_rate_rows(webhooks: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    if not webhooks:
        return []
    a, h = webhooks["ackflow"], webhooks["httpx"]
    figure = f"webhook deliveries/s / plain httpx, {webhooks['in_flight']} in flight"
    measured = f"{_num(webhooks['ratio'])} ({_num(a['rate'])} vs {_num(h['rate'])}/s; {a['succeeded']} succeeded)"
    rows = [(figure, measured, ">= 1,000/s")]
    two = webhooks.get("two_workers")
    if two:
        rows.append(
            (
                "webhook deliveries/s, two worker processes",
                f"{_num(two['rate'])} ({two['succeeded']} succeeded)",
                "(scale-out)",
            )
        )
    return rows


def _backlog_rows(backlog: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """Accept p99 on the idle stack and while the backlog drains, and how much drained meanwhile."""
    if not backlog:
        return []
    idle, draining = backlog["idle"]["latency_ms"], backlog["draining"]["latency_ms"]
    return [
        (
            f"accept p99 at {backlog['rate']:g}/s, idle / while {backlog['backlog']:,} drain",
            f"{_num(idle['p99'])} / {_num(draining['p99'])} ms",
            "< 10 ms",
        ),
        ("backlog requests completed meanwhile", f"{backlog['drained']} ({backlog['drain_rate']:g}/s)", "(context)"),
        *_cores_rows(backlog),
    ]


def _flow_control_rows(flow: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """Claim cost per request and accept p99 with the keyed backlog waiting, each over its baseline."""
    if not flow:
        return []
    plain, keyed = flow["claim"]["plain"], flow["claim"]["keyed"]
    idle, waiting = flow["idle"]["latency_ms"], flow["with_waiting"]["latency_ms"]
    shape = f"{flow['waiting']:,} waiting over {flow['keys']:,} keys, {len(flow['priorities'])} priorities"
    return [
        (
            f"claim per request, {shape} / plain backlog",
            f"x{_num(flow['claim_ratio'])} ({_num(keyed['ms_per_request'])} / {_num(plain['ms_per_request'])} ms;"
            f" pages x{_num(flow['claim_pages_ratio'])})",
            "flat (~x1)",
        ),
        (
            f"accept p99 at {flow['rate']:g}/s, {shape} / idle",
            f"x{_num(flow['accept_p99_ratio'])} ({_num(waiting['p99'])} / {_num(idle['p99'])} ms)",
            "<= x2",
        ),
    ]


def _cores_rows(backlog: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Cores in use on the idle stack and while draining: whether the machine was the limit."""
    used = backlog.get("cores_in_use")
    if not used:
        return []

    def describe(by_process: dict[str, float]) -> str:
        busiest = sorted(by_process.items(), key=lambda item: -item[1])
        return f"{sum(by_process.values()):.2f} ({', '.join(f'{name} {cores:g}' for name, cores in busiest)})"

    return [
        (
            f"cores in use of {backlog['cores']}, idle / draining",
            f"{describe(used['idle'])} / {describe(used['draining'])}",
            "(context: the load generator is `bench`)",
        )
    ]


def _relay_lag_rows(lag: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """Accept commit -> workflow started, per mode and rate."""
    if not lag:
        return []
    targets = {"notify": "p50 < 10 ms", "poll_only": f"(polls every {lag['poll_seconds']:g} s)"}
    rows = []
    for mode, target in targets.items():
        for step in lag[mode]:
            p = step["lag_ms"]
            figure = f"relay lag, {mode.replace('_', '-')}, at {step['rate']:g}/s: p50 / p90 / p99 / max"
            rows.append((figure, " / ".join(_num(p[q]) for q in ("p50", "p90", "p99", "max")) + " ms", target))
    return rows


def markdown(results: dict[str, Any]) -> str:
    """The Markdown report: which run measured each scenario, the headline table, then every step of every ramp."""
    runs = results["runs"]
    lines = [
        "# ackflow benchmark: the latest measurement of each scenario\n",
        "Each ratio compares a target with its ceiling measured in the same run.\n",
        "| scenario | measured | profile | seconds | machine |",
        "| --- | --- | --- | ---: | --- |",
        *[_run_row(name, run) for name, run in runs.items()],
        "",
        "| figure | measured | target (issue 6) |",
        "| --- | --- | --- |",
        *[f"| {a} | {b} | {c} |" for a, b, c in headline(results)],
        "",
        *batching_table(results.get("batching")),
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


def _run_row(name: str, run: dict[str, Any]) -> str:
    machine = f"{run['cpus']} CPUs, {run['platform']}"
    return f"| {name} | {run['started']} | {run['profile']} | {run['seconds']:g} | {machine} |"


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


def _cpu_rows(ours: dict[str, float], raw: dict[str, float]) -> list[tuple[str, str, str]]:
    """CPU per completed request over the sustainable end-to-end steps: the Temporal server's, and all of it."""
    if not ours or not raw:
        return []
    ours_total, raw_total = sum(ours.values()), sum(raw.values())
    return [
        (
            "Temporal server CPU per request, ackflow vs raw",
            f"{_num(ours.get('temporal'))} vs {_num(raw.get('temporal'))} ms",
            "equal (ackflow adds no Temporal work)",
        ),
        ("CPU per request, all processes, ackflow vs raw", f"{ours_total:.1f} vs {raw_total:.1f} ms", "(context)"),
    ]


def _ratio(ratio: float | None, ours: dict[str, Any], ceiling: dict[str, Any]) -> str:
    return f"{_num(ratio)} ({ours['max_rate']:g} vs {ceiling['max_rate']:g} req/s)"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def merge_latest(latest: dict[str, Any] | None, run: dict[str, Any]) -> dict[str, Any]:
    """`latest` with the scenarios `run` measured replaced by its figures, each noted in `runs` with its run."""
    meta = run["meta"]
    measured = {name: figures for name, figures in run.items() if name != "meta"}
    kept = {name: figures for name, figures in (latest or {}).items() if name != "runs" and name not in measured}
    runs = {name: when for name, when in (latest or {}).get("runs", {}).items() if name not in measured}
    for name in measured:
        runs[name] = {
            "started": meta["started"],
            "profile": meta["profile"],
            "seconds": meta["scenario_seconds"][name],
            "cpus": meta["cpus"],
            "platform": meta["platform"],
        }
    return kept | measured | {"runs": runs}


def write_results(out_dir: Path, run: dict[str, Any]) -> tuple[dict[str, Any], list[Path]]:
    """Merge the run into `out_dir`'s latest.json, write it and latest.md; the merged results and their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = out_dir / "latest.json", out_dir / "latest.md"
    latest = json.loads(json_path.read_text()) if json_path.exists() else None
    merged = merge_latest(latest, run)
    json_path.write_text(json.dumps(merged, indent=2) + "\n")
    markdown_path.write_text(markdown(merged))
    return merged, [json_path, markdown_path]
