"""How deep a JSON value from a client may nest: refused before anything is written."""

from __future__ import annotations

from typing import Any

from ackflow.errors import InvalidInput


def check_depth(value: Any, limit: int, field: str = "payload") -> None:
    """Refuse a JSON value nested deeper than `limit` (objects and arrays), before anything is written."""
    level, current = 1, [value]
    while current:
        nested = [v for item in current for v in _children(item)]
        if nested:
            level += 1
            if level > limit:
                raise InvalidInput(
                    f"the {field} is nested deeper than {limit} levels",
                    errors=[{"field": field, "in": "body", "message": f"nesting deeper than {limit}"}],
                )
        current = nested


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, dict | list)]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict | list)]
    return []
