"""Which scenarios run: the short form by default, every process and both outages in the full form."""

from __future__ import annotations

import pytest

from tests.chaos.scenarios import FORM_VARIABLE, SHORT, selected_scenarios
from tests.chaos.stack import ROLES, SERVERS


def test_the_short_form_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FORM_VARIABLE, raising=False)
    assert selected_scenarios() == SHORT


def test_the_full_form_schedules_a_sigkill_of_every_process_and_outages_of_temporal_and_postgres(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FORM_VARIABLE, "full")
    chosen = selected_scenarios()
    assert {name for scenario in chosen for name in scenario.kills} == {*ROLES, *SERVERS}
    assert {scenario.outage for scenario in chosen} >= {("temporal", 20.0), ("postgres", 10.0)}
    assert sum(scenario.requests for scenario in chosen) >= 300


def test_an_unknown_form_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FORM_VARIABLE, "everything")
    with pytest.raises(ValueError, match=FORM_VARIABLE):
        selected_scenarios()
