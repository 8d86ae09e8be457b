"""Strings from outside (a client's body, header or token; a partner's answer): what may be stored or read as a number.

Postgres `text` cannot hold U+0000 (error 22021, which would surface as a 500), so every text field
of the HTTP edge carries the `STORABLE_TEXT` pattern and a NUL is refused as invalid input before
anything is written. `str.isdigit` is true for characters `int` cannot read (`'²'` raises) or
reads as digits no client meant (`'٣'` is 3), so every number read from a string goes through
`parse_digits`, which takes ASCII digits only.
"""

from __future__ import annotations

# A JSON-schema (ECMA-262) and Python pattern alike: no U+0000 anywhere in the string.
STORABLE_TEXT = r"^[^\u0000]*$"


def parse_digits(value: str, *, maximum: int) -> int | None:
    """`value` as an int if it is nothing but ASCII digits (no sign, space or underscore), at most
    `maximum`; None otherwise. Its length is checked first, so a long string is never converted."""
    if not value or len(value) > len(str(maximum)) or not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if number <= maximum else None
