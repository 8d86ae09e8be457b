"""The README documents every setting ackflow reads."""

from __future__ import annotations

from pathlib import Path

from ackflow.settings import _ENV

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_environment_variable_is_documented_in_the_readme() -> None:
    text = README.read_text()
    missing = [variable for variable, _ in _ENV.values() if f"`{variable}`" not in text]
    assert missing == [], f"document these in README.md: {missing}"
