"""Named SQL statements, kept as SQL in `queries.sql` so they read and diff as SQL."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def _load() -> dict[str, str]:
    text = resources.files("ackflow.db").joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)[1:]
    return {name: body.strip() for name, body in zip(parts[::2], parts[1::2], strict=True)}


def sql(name: str) -> str:
    """The statement called `name` in queries.sql (KeyError if there is none)."""
    return _load()[name]
