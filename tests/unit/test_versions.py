"""A live event's version decides what a stream does with it: pass it on, drop it, or read Postgres."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gateway.hub import RESYNC
from gateway.versions import RequestCursor, TenantCursor, Verdict, judge


@dataclass(frozen=True)
class Event:
    id: int
    request_id: str
    version: int
    terminal: bool = False


@pytest.mark.parametrize(
    ("last_sent", "version", "verdict"),
    [
        (None, 1, Verdict.NEXT),  # nothing sent yet of this request: its first event seen is passed on
        (None, 5, Verdict.NEXT),
        (0, 1, Verdict.NEXT),
        (3, 4, Verdict.NEXT),
        (3, 3, Verdict.DUPLICATE),
        (3, 2, Verdict.DUPLICATE),  # a late message of an older version
        (0, 2, Verdict.GAP),
        (3, 5, Verdict.GAP),  # version 4 was lost or comes later
    ],
)
def test_a_version_is_the_next_one_a_duplicate_or_after_a_gap(
    last_sent: int | None, version: int, verdict: Verdict
) -> None:
    assert judge(last_sent, version) is verdict


def test_a_tenant_cursor_judges_each_request_by_the_version_it_sent_last() -> None:
    cursor = TenantCursor(after_id=100)
    cursor.sent(Event(101, "r1", 1))
    assert cursor.judge(Event(102, "r1", 2)) is Verdict.NEXT
    assert cursor.judge(Event(101, "r1", 1)) is Verdict.DUPLICATE
    assert cursor.judge(Event(105, "r1", 4)) is Verdict.GAP
    assert cursor.judge(Event(103, "r2", 3)) is Verdict.NEXT, "a request not sent yet: its event is passed on"
    assert cursor.last_version("r1") == 1 and cursor.last_version("r2") == 0
    assert cursor.high_water == 101


def test_a_tenant_cursor_drops_events_from_before_the_stream_started() -> None:
    cursor = TenantCursor(after_id=100)
    assert cursor.judge(Event(100, "r1", 1)) is Verdict.DUPLICATE
    assert not cursor.is_new(Event(99, "r1", 1))
    assert cursor.is_new(Event(101, "r1", 1))


def test_events_read_from_postgres_are_new_only_above_the_version_sent() -> None:
    cursor = TenantCursor(after_id=0)
    cursor.sent(Event(7, "r1", 2))
    assert not cursor.is_new(Event(5, "r1", 1))
    assert not cursor.is_new(Event(7, "r1", 2))
    assert cursor.is_new(Event(9, "r1", 3))
    cursor.sent(Event(9, "r1", 3))
    assert cursor.high_water == 9 and cursor.last_version("r1") == 3


def test_a_tenant_cursor_remembers_only_its_most_recent_requests() -> None:
    cursor = TenantCursor(after_id=0, capacity=2)
    cursor.sent(Event(1, "old", 1))
    cursor.sent(Event(2, "mid", 1))
    cursor.sent(Event(3, "old", 2))  # "old" is recent again
    cursor.sent(Event(4, "new", 1))  # so "mid" is the one forgotten
    assert cursor.last_version("old") == 2 and cursor.last_version("new") == 1
    assert cursor.last_version("mid") == 0
    assert cursor.judge(Event(9, "mid", 3)) is Verdict.NEXT, "a forgotten request's next event is passed on"
    assert cursor.high_water == 4


def test_every_cursor_judges_a_resync_a_gap_so_the_stream_reads_postgres() -> None:
    assert RequestCursor("r1", 3).judge(RESYNC) is Verdict.GAP
    assert TenantCursor(after_id=100).judge(RESYNC) is Verdict.GAP


def test_a_request_cursor_judges_by_the_version_it_sent_last() -> None:
    cursor = RequestCursor("r1", 3)
    assert cursor.judge(Event(10, "r1", 4)) is Verdict.NEXT
    assert cursor.judge(Event(9, "r1", 3)) is Verdict.DUPLICATE
    assert cursor.judge(Event(11, "r1", 5)) is Verdict.GAP
    assert cursor.judge(Event(10, "r2", 4)) is Verdict.DUPLICATE, "another request's message is dropped"
    cursor.sent(Event(10, "r1", 4))
    assert cursor.version == 4 and not cursor.finished
    assert cursor.judge(Event(11, "r1", 5)) is Verdict.NEXT


def test_a_request_cursor_is_finished_once_the_terminal_event_is_sent() -> None:
    cursor = RequestCursor("r1", 0)
    cursor.sent(Event(1, "r1", 1))
    assert not cursor.finished
    cursor.sent(Event(2, "r1", 2, terminal=True))
    assert cursor.finished and cursor.version == 2


def test_a_long_poll_reads_postgres_after_a_resync_a_gap_or_the_terminal_event() -> None:
    assert RequestCursor("r1", 2).must_read(RESYNC)
    assert RequestCursor("r1", 2).must_read(Event(9, "r1", 4)), "version 3 was missed, and may be the end"
    assert RequestCursor("r1", 2).must_read(Event(9, "r1", 3, terminal=True))


def test_a_long_poll_keeps_waiting_through_the_next_event_and_duplicates() -> None:
    cursor = RequestCursor("r1", 2)
    assert not cursor.must_read(Event(8, "r1", 3))
    assert cursor.version == 3, "the next event is recorded as seen"
    assert not cursor.must_read(Event(8, "r1", 3)), "a duplicate changes nothing"
    assert not cursor.must_read(Event(7, "r1", 2))
    assert not cursor.must_read(Event(9, "r2", 4)), "another request's message changes nothing"
    assert cursor.version == 3
    assert cursor.must_read(Event(10, "r1", 5)), "after version 3 seen, version 5 is a gap"
