"""Numbers read from outside strings: ASCII digits only, within a maximum, never an exception."""

from __future__ import annotations

import re

import pytest

from ackflow.inputs import STORABLE_TEXT, parse_digits
from ackflow.sse import EventStreamParser


@pytest.mark.parametrize(
    "value",
    ["\u00b2", "1\u00b9", "\u0661\u0662", "\uff11", "1_000", "+1", "-1", " 1", "1 ", "", "1.0", "0x10", "9" * 5000],
)
def test_anything_but_ascii_digits_is_not_a_number(value: str) -> None:
    assert parse_digits(value, maximum=10**30) is None


def test_ascii_digits_are_read_up_to_the_maximum() -> None:
    assert parse_digits("0", maximum=5) == 0
    assert parse_digits("123", maximum=123) == 123
    assert parse_digits("124", maximum=123) is None
    assert parse_digits("9223372036854775807", maximum=2**63 - 1) == 2**63 - 1


def test_storable_text_is_anything_without_nul() -> None:
    assert re.search(STORABLE_TEXT, "line\nbreak \u2028 \U0001f986 end\n")
    for text in ["\u0000", "a\u0000", "\u0000b", "a\nb\u0000"]:
        assert not re.search(STORABLE_TEXT, text), repr(text)


def test_the_event_stream_parser_reads_retry_as_ascii_digits_and_never_raises() -> None:
    parser = EventStreamParser("")
    parser.feed(b"retry: 1500\n\n")
    assert parser.retry == 1.5
    for hostile in ["9" * 5000, "\u00b2", "\u0661\u0662", "-1", "1e3"]:
        parser.feed(f"retry: {hostile}\n\n".encode())
        assert parser.retry == 1.5, hostile
