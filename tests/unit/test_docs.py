"""The README says what the code does: every setting and its default, and the banner `ackflow dev` prints."""

from __future__ import annotations

import re
from pathlib import Path

from ackflow.dev import _banner
from ackflow.settings import _ENV, Settings

README = Path(__file__).resolve().parents[2] / "README.md"
BENCH_README = README.parent / "bench" / "README.md"
# What the README's banner shows: example addresses and key, and the example handlers' kinds.
BANNER_INFO = {
    "api_url": "http://127.0.0.1:8000",
    "temporal_ui_url": "http://127.0.0.1:41233",
    "metrics_url": "http://127.0.0.1:8000/metrics",
    "api_key": "ak_1f2e3d4c_...",
}
EXAMPLE_KINDS = ["echo", "fail", "pipeline", "sleep"]


def test_every_environment_variable_is_documented_in_the_readme() -> None:
    text = README.read_text()
    missing = [variable for variable, _ in _ENV.values() if f"`{variable}`" not in text]
    assert missing == [], f"document these in README.md: {missing}"


def documented_defaults() -> list[tuple[str, str]]:
    """(variable, default) from the README's settings table: `A` / `B` | `1` / `2` pairs up in order."""
    variables = {variable for variable, _ in _ENV.values()}
    pairs: list[tuple[str, str]] = []
    for line in README.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3:
            continue
        names = [name for name in re.findall(r"`([A-Z_]+)`", cells[0]) if name in variables]
        # zip stops at the names: in "`false` (`true` under `ackflow dev`)" the default is the first value.
        pairs += zip(names, re.findall(r"`([^`]+)`", cells[1]), strict=False)
    return pairs


def test_every_default_the_readme_gives_is_the_settings_default() -> None:
    by_variable = {variable: (name, parse) for name, (variable, parse) in _ENV.items()}
    defaults = Settings()
    documented = documented_defaults()
    with_a_default = {variable for name, (variable, _) in _ENV.items() if getattr(defaults, name) not in ("", (), None)}
    assert with_a_default <= {variable for variable, _ in documented}, "give each setting's default in the table"
    wrong = []
    for variable, raw in documented:
        name, parse = by_variable[variable]
        if parse(raw) != getattr(defaults, name):
            wrong.append(f"{variable}: README says {raw}, the default is {getattr(defaults, name)!r}")
    assert wrong == []


def test_the_readme_shows_the_banner_ackflow_dev_prints() -> None:
    banner = _banner(BANNER_INFO, EXAMPLE_KINDS).strip("\n")
    assert banner in README.read_text(), "copy the banner of ackflow/dev.py into README.md's Quickstart"


def test_the_example_handlers_are_the_kinds_the_banner_shows() -> None:
    from ackflow.dev import DEV_HANDLERS
    from ackflow.handlers import load_handler_modules

    registry = load_handler_modules(DEV_HANDLERS)
    # The registry is the process's one: other tests' handler modules may be in it too.
    examples = sorted(h.kind for h in registry.handlers() if (h.function or h.workflow).__module__ in DEV_HANDLERS)
    assert examples == EXAMPLE_KINDS
