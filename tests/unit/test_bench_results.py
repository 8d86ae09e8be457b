"""The benchmark keeps one latest result set: each run replaces the scenarios it measured, and nothing piles up."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from bench.__main__ import SCENARIOS
from bench.report import markdown, write_results

BENCH = Path(__file__).resolve().parents[2] / "bench"
BENCH_README = BENCH / "README.md"
# Figures of the real shape: the committed latest set's.
COMMITTED = json.loads((BENCH / "results" / "latest.json").read_text())


def run(started: str, profile: str, **scenarios: Any) -> dict[str, Any]:
    meta = {
        "started": started,
        "profile": profile,
        "duration_s": 1.0,
        "scenario_seconds": {name: 1.0 for name in scenarios},
        "cpus": 2,
        "platform": "Linux x86_64, Python 3.11.7",
    }
    return scenarios | {"meta": meta}


def batching(sustained: float) -> dict[str, Any]:
    figures: dict[str, Any] = copy.deepcopy(COMMITTED["batching"])
    figures["closed_loop"][figures["batched"]]["sustained_rate"] = sustained
    return figures


def test_a_run_replaces_only_its_scenarios_in_the_latest_set_and_writes_nothing_else(tmp_path: Path) -> None:
    write_results(tmp_path, run("2026-11-27 12:08 UTC", "full", relay_lag=COMMITTED["relay_lag"]))
    write_results(tmp_path, run("2026-12-02 07:37 UTC", "full", batching=batching(280.0)))
    latest, paths = write_results(tmp_path, run("2026-12-03 08:00 UTC", "quick", batching=batching(437.0)))

    assert sorted(path.name for path in tmp_path.iterdir()) == ["latest.json", "latest.md"] == [p.name for p in paths]
    stored = json.loads((tmp_path / "latest.json").read_text())
    assert stored == latest
    assert stored["batching"]["closed_loop"][stored["batching"]["batched"]]["sustained_rate"] == 437.0
    assert {name: when["started"] for name, when in stored["runs"].items()} == {
        "relay_lag": "2026-11-27 12:08 UTC",
        "batching": "2026-12-03 08:00 UTC",
    }
    text = (tmp_path / "latest.md").read_text()
    assert "437" in text and "relay lag, notify, at 5/s" in text
    assert "| relay_lag | 2026-11-27 12:08 UTC | full |" in text
    assert "| batching | 2026-12-03 08:00 UTC | quick |" in text


def test_the_bench_readme_names_every_scenario_only_takes() -> None:
    sentence = re.search(r"The scenarios `--only` takes are (.+?) \(", BENCH_README.read_text(), re.DOTALL)
    assert sentence is not None
    assert re.findall(r"`(\w+)`", sentence[1]) == list(SCENARIOS)


def test_the_committed_latest_markdown_is_what_the_report_makes_of_the_committed_json() -> None:
    assert (BENCH / "results" / "latest.md").read_text() == markdown(COMMITTED)
