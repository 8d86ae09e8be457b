"""The chaos suite's fixtures: which scenarios run, a data folder per scenario, and the summary table."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.chaos.audit import HEADER
from tests.chaos.scenarios import selected_scenarios

_TABLE_KEY = pytest.StashKey[list[str]]()
_FAILED_KEY = pytest.StashKey[bool]()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise `scenario` with the short form, or every scenario under ACKFLOW_CHAOS=full."""
    if "scenario" in metafunc.fixturenames:
        chosen = selected_scenarios()
        metafunc.parametrize("scenario", chosen, ids=[s.name for s in chosen])


@pytest.fixture
def chaos_table(request: pytest.FixtureRequest) -> list[str]:
    """Lines for the table printed at the end of the run, one per scenario."""
    return request.config.stash.setdefault(_TABLE_KEY, [])


@pytest.fixture
def chaos_root(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The scenario's servers' data and the roles' logs: removed if it passed, kept if not (the
    failure message names it)."""
    root = Path(tempfile.mkdtemp(prefix="ackflow-chaos-"))
    yield root
    if not request.node.stash.get(_FAILED_KEY, False):
        shutil.rmtree(root, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        item.stash[_FAILED_KEY] = True
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    lines = config.stash.get(_TABLE_KEY, [])
    if lines:
        terminalreporter.section("chaos suite")
        terminalreporter.write_line(HEADER)
        for line in lines:
            terminalreporter.write_line(line)
