"""What a stream does with a live event, decided by versions: pass it on, drop it, or read Postgres.

A request's `version` grows by exactly one per event (see ackflow/live.py). Against the version a
stream last sent for that request, a live event is the NEXT one (pass it on as it is), a DUPLICATE
(already sent, or older: drop it), or comes after a GAP (a message was lost or reordered: read the
missed events from Postgres, the record). A RESYNC (live messages may have been lost, which ones is
unknown) is judged a gap. Every stream decides the same way: a request's streams (SSE, WebSocket, long
poll) with a `RequestCursor`, a tenant's with a `TenantCursor`.
"""

from __future__ import annotations

import abc
import collections
import enum
from typing import Protocol

from gateway.hub import Resync

TRACKED_REQUESTS = 10_000  # requests a tenant stream remembers the version of (bounds memory, not correctness)


class Verdict(enum.Enum):
    """What to do with a live event."""

    NEXT = "next"  # the very next version, or the first of a request not followed yet: pass it on
    DUPLICATE = "duplicate"  # sent already (or older than what was): drop it
    GAP = "gap"  # versions were skipped: read them from Postgres


def judge(last_sent: int | None, version: int) -> Verdict:
    """The verdict on an event of `version`, for a stream that last sent `last_sent` (None: nothing yet)."""
    if last_sent is None or version == last_sent + 1:
        return Verdict.NEXT
    if version <= last_sent:
        return Verdict.DUPLICATE
    return Verdict.GAP


class Event(Protocol):
    """What the versions of an event are read from (gateway.stream_items.StreamEvent)."""

    @property
    def id(self) -> int: ...  # the request_events id
    @property
    def request_id(self) -> str: ...
    @property
    def version(self) -> int: ...


class RequestEvent(Event, Protocol):
    """An event of a request stream, which ends after the terminal one."""

    @property
    def terminal(self) -> bool: ...


class _Cursor(abc.ABC):
    """What every cursor shares: a RESYNC is judged here, in one place."""

    def judge(self, item: Event | Resync) -> Verdict:
        """The verdict on a live event, or GAP for a RESYNC: what was missed is unknown, Postgres has it."""
        return Verdict.GAP if isinstance(item, Resync) else self._judge_event(item)

    @abc.abstractmethod
    def _judge_event(self, event: Event) -> Verdict: ...


class RequestCursor(_Cursor):
    """Where a stream of one request is (SSE, WebSocket, long poll): the version it last sent (a long
    poll: saw), and whether that was the terminal event, after which nothing more comes."""

    def __init__(self, request_id: str, version: int) -> None:
        self.request_id = request_id
        self.version = version
        self.finished = False

    def _judge_event(self, event: Event) -> Verdict:
        if event.request_id != self.request_id:
            return Verdict.DUPLICATE  # another request's message, never expected on its channel: drop it
        return judge(self.version, event.version)

    def sent(self, event: RequestEvent) -> None:
        """Record `event` as sent."""
        self.version = event.version
        self.finished = event.terminal

    def must_read(self, item: RequestEvent | Resync) -> bool:
        """For a long poll waiting for the end, with the live `item`: whether Postgres may now show the
        request ended (after a RESYNC, a gap, whose missed events may hold the terminal one, or the
        terminal event). The next event is recorded as seen; a duplicate changes nothing."""
        verdict = self.judge(item)
        if verdict is Verdict.NEXT and not isinstance(item, Resync):
            self.sent(item)
        return verdict is Verdict.GAP or self.finished


class TenantCursor(_Cursor):
    """Where a tenant stream is: the last event id it sent, and the last version of each recent request.

    It follows many requests at once, so it remembers the version last sent per request (the most
    recent `capacity` of them: one forgotten only costs a Postgres read it did not need, or passes on
    its next event as the first one seen). Events at or before the id it started after are old.
    """

    def __init__(self, after_id: int, capacity: int = TRACKED_REQUESTS) -> None:
        self.high_water = after_id  # the last event id sent: a catch-up reads after it
        self._start = after_id
        self._versions: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._capacity = capacity

    def last_version(self, request_id: str) -> int:
        """The version last sent of the request (0 if none is remembered)."""
        return self._versions.get(request_id, 0)

    def _judge_event(self, event: Event) -> Verdict:
        # `judge` against the version last sent of the event's request
        if event.id <= self._start:
            return Verdict.DUPLICATE
        return judge(self._versions.get(event.request_id), event.version)

    def is_new(self, event: Event) -> bool:
        """Whether an event read from Postgres is one the stream has not sent."""
        return event.id > self._start and event.version > self._versions.get(event.request_id, 0)

    def sent(self, event: Event) -> None:
        """Record `event` as sent."""
        self.high_water = max(self.high_water, event.id)
        self._versions[event.request_id] = event.version
        self._versions.move_to_end(event.request_id)
        if len(self._versions) > self._capacity:
            self._versions.popitem(last=False)
