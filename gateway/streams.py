"""Following requests live: replay from Postgres, then Redis events, in order, without duplicates.

Every stream (SSE, WebSocket, long poll) starts the same way: subscribe to the live channel first,
then read what Postgres already has (gateway/replay.py, page by page), so nothing committed in
between can be missed. After that, a live event whose version is the next one is passed on
directly; a duplicate (version already seen) is dropped; a gap (a version skipped: a message lost
or reordered) is filled from Postgres (gateway/versions.py decides which). While the hub is degraded
(Redis down) streams read Postgres every `poll_seconds`; when it comes back the hub sends RESYNC and
every stream catches up once. Redis is never the record.

One event may go to thousands of streams, so what is the same for all of them is done once: a
live message is decoded once (every subscriber gets the same bytes), an event is encoded for SSE
once, and the Postgres read that a gap or a RESYNC calls for is shared by every stream asking
for the same thing at the same moment.
"""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from ackflow.contracts import TERMINAL_STATUSES
from ackflow.db.queries import sql
from ackflow.live import decode_live_event, request_channel, tenant_channel
from gateway.event_filter import EventFilter
from gateway.hub import RESYNC, Hub, Message, Resync, Subscription
from gateway.open_streams import OpenStreams, StreamLease
from gateway.replay import REPLAY_PAGE_BYTES, REPLAY_PAGE_ROWS, Replay
from gateway.stream_items import FLUSH, KEEPALIVE, OVERFLOW, REVOKED, Flush, LiveItem, StreamEvent, StreamItem
from gateway.versions import RequestCursor, TenantCursor, Verdict

DECODED_MESSAGES = 128  # live messages kept decoded while their fan-out runs (bounds memory, not correctness)


@dataclass(frozen=True)
class StreamPosition:
    status: str
    version: int
    seen_version: int
    trace_context: str | None = None  # the request's, for the stream's span to link to

    @property
    def finished_for_client(self) -> bool:
        """The request ended and the client has seen its last event: nothing more will come."""
        return self.status in TERMINAL_STATUSES and self.seen_version >= self.version


class Streams:
    """What every stream needs: Postgres, the hub (and its health), the timings."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        hub: Hub,
        *,
        keepalive_seconds: float,
        poll_seconds: float,
        open_streams: OpenStreams | None = None,
        page_rows: int = REPLAY_PAGE_ROWS,
        page_bytes: int = REPLAY_PAGE_BYTES,
    ) -> None:
        self.pool = pool
        self.replay = Replay(pool, page_rows=page_rows, page_bytes=page_bytes)
        self.hub = hub
        self.keepalive_seconds = keepalive_seconds
        self.poll_seconds = poll_seconds
        self.open_streams = open_streams

    async def open_stream(self, tenant_id: uuid.UUID, key_id: uuid.UUID, transport: str = "sse") -> StreamLease:
        """Count a stream against the tenant's limit (all gateways); `release()` the lease when it ends."""
        assert self.open_streams is not None, "a gateway's Streams has open_streams"
        return await self.open_streams.open(tenant_id, key_id, transport)

    async def position(self, tenant_id: uuid.UUID, request_id: uuid.UUID, last_event_id: int) -> StreamPosition | None:
        row = await self.pool.fetchrow(sql("request_stream_position"), request_id, tenant_id, last_event_id)
        if row is None:
            return None
        return StreamPosition(row["status"], row["version"], row["seen_version"], row["trace_context"])

    def follow_request(
        self, tenant_id: uuid.UUID, request_id: uuid.UUID, seen_version: int, lease: StreamLease
    ) -> AsyncIterator[StreamItem]:
        """Every event of the request after `seen_version`, in order, ending after the terminal one
        (or when the lease's key is revoked)."""
        follower = _RequestFollower(self.replay, tenant_id, request_id, seen_version)
        return self._follow(request_channel(str(request_id)), lease, follower)

    def follow_tenant(
        self,
        tenant_id: uuid.UUID,
        last_event_id: int | None,
        only: EventFilter,
        lease: StreamLease,
    ) -> AsyncIterator[StreamItem]:
        """The tenant's events that `only` matches; replays after `last_event_id`.
        Ends when the lease's key is revoked."""
        follower = _TenantFollower(self.replay, tenant_id, last_event_id, only)
        return self._follow(tenant_channel(str(tenant_id)), lease, follower)

    async def _follow(self, channel: str, lease: StreamLease, follower: _Follower) -> AsyncIterator[StreamItem]:
        """The stream of `channel`: the signals of `_live`, and what `follower` sends for each live event
        or RESYNC, until it has sent its last event (or OVERFLOW or REVOKED ends `_live`)."""
        async with self.hub.subscribe(channel) as subscription:
            lease.watch(subscription)
            await follower.start()
            live = False  # the first item is the RESYNC of the first read from Postgres
            async for item in self._live(subscription, lease):
                if not isinstance(item, StreamEvent | Resync):
                    yield item  # `_live` ends right after OVERFLOW or REVOKED, and so does the stream
                    continue
                sends = follower.take(item)
                if isinstance(sends, StreamEvent):
                    yield sends
                elif sends is not None:
                    async for each in sends:
                        yield each
                if follower.finished:
                    yield FLUSH  # write it now
                    if live:  # then end only once every follower woken by the same message has it
                        await self.hub.handed_out()
                    return
                live = True

    async def wait_until_terminal(
        self,
        tenant_id: uuid.UUID,
        request_id: uuid.UUID,
        timeout: float,
        lease: StreamLease,
        *,
        past_version: int | None = None,
    ) -> None:
        """Return when the request has ended (or, given `past_version`, changed past it: a progress
        report counts), or after `timeout` seconds, or when the lease's key is revoked (the caller
        checks `lease.revoked`), whichever is first."""
        deadline = time.monotonic() + timeout
        async with self.hub.subscribe(request_channel(str(request_id))) as subscription:
            lease.watch(subscription)
            while not lease.revoked:
                position = await self.position(tenant_id, request_id, 0)
                if position is None or position.status in TERMINAL_STATUSES:
                    return
                if past_version is not None and position.version > past_version:
                    return
                cursor = RequestCursor(str(request_id), position.version)
                if not await self._until_worth_reading(subscription, lease, deadline, cursor, past_version):
                    return

    async def _until_worth_reading(
        self,
        subscription: Subscription,
        lease: StreamLease,
        deadline: float,
        cursor: RequestCursor,
        past_version: int | None,
    ) -> bool:
        """Wait until Postgres may show that the request ended or (given `past_version`) changed past
        it (True), or until the deadline or the lease's revocation (False)."""
        while (left := deadline - time.monotonic()) > 0 and not lease.revoked:
            wait = left if self.hub.healthy else min(left, self.poll_seconds)
            message = await subscription.next(wait)
            if message is None:
                if not self.hub.healthy:
                    return True  # Redis is down: read Postgres every poll_seconds
                continue
            live = _decoded(message)
            if live is not None and cursor.must_read(live):
                return True
            if past_version is not None and cursor.version > past_version:
                return True
        return False

    async def _live(self, subscription: Subscription, lease: StreamLease) -> AsyncIterator[LiveItem]:
        """RESYNC first (a stream starts by catching up from Postgres, as after Redis came back), then
        live events, and RESYNC whenever Postgres must be read again (the hub says so, or Redis is down
        and `poll_seconds` passed); keep-alives; FLUSH whenever nothing more is queued, before waiting;
        OVERFLOW or REVOKED last."""
        yield RESYNC
        last_write = time.monotonic()
        while True:
            if not subscription.pending:
                yield FLUSH
            until_keepalive = self.keepalive_seconds - (time.monotonic() - last_write)
            wait = until_keepalive if self.hub.healthy else min(until_keepalive, self.poll_seconds)
            message = await subscription.next(max(wait, 0.0))
            if lease.revoked:
                yield REVOKED
                return
            if subscription.overflowed:
                yield OVERFLOW
                return
            if message is None:
                if not self.hub.healthy:
                    yield RESYNC
                if time.monotonic() - last_write >= self.keepalive_seconds:
                    last_write = time.monotonic()
                    yield KEEPALIVE
                continue
            live = _decoded(message)
            if isinstance(live, StreamEvent):
                last_write = time.monotonic()
            if live is not None:
                yield live


class _Follower(Protocol):
    """What one kind of stream sends for each live event or RESYNC (`Streams._follow` runs it)."""

    @property
    def finished(self) -> bool:
        """It has sent its last event: the stream ends."""
        ...

    async def start(self) -> None:
        """Called once subscribed, before the first `take`."""

    def take(self, item: StreamEvent | Resync) -> StreamEvent | AsyncIterator[StreamEvent | Flush] | None:
        """What to send: the live event itself (the fast path, run once per follower per event: no
        read, no generator), events read from Postgres (after a gap or a RESYNC), or nothing."""
        ...


class _RequestFollower:
    """One request's stream (SSE, WebSocket): its events in version order, the terminal one last."""

    def __init__(self, replay: Replay, tenant_id: uuid.UUID, request_id: uuid.UUID, seen_version: int) -> None:
        self._replay = replay
        self._tenant_id = tenant_id
        self._request_id = request_id
        self._cursor = RequestCursor(str(request_id), seen_version)

    @property
    def finished(self) -> bool:
        return self._cursor.finished

    async def start(self) -> None:
        pass

    def take(self, item: StreamEvent | Resync) -> StreamEvent | AsyncIterator[StreamEvent | Flush] | None:
        verdict = self._cursor.judge(item)
        if verdict is Verdict.NEXT and isinstance(item, StreamEvent):
            self._cursor.sent(item)
            return item
        return self._missed() if verdict is Verdict.GAP else None

    async def _missed(self) -> AsyncIterator[StreamEvent | Flush]:
        """The events after the version sent last, from Postgres, up to the terminal one."""
        events = self._replay.request_events(self._tenant_id, self._request_id, self._cursor.version)
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, StreamEvent):
                    self._cursor.sent(event)
                yield event
                if self._cursor.finished:
                    return


class _TenantFollower:
    """A tenant's stream: its events (those `only` matches), each request's in version order. It never
    finishes: OVERFLOW or REVOKED end it."""

    finished = False

    def __init__(self, replay: Replay, tenant_id: uuid.UUID, last_event_id: int | None, only: EventFilter) -> None:
        self._replay = replay
        self._tenant_id = tenant_id
        self._from_latest = last_event_id is None
        self._cursor = TenantCursor(last_event_id or 0)
        self._only = only

    async def start(self) -> None:
        """No `last_event_id`: start after the tenant's latest event, read only now that the stream is
        subscribed, so that nothing committed in between is missed."""
        if self._from_latest:
            latest = await self._replay.pool.fetchval(sql("latest_tenant_event_id"), self._tenant_id)
            self._cursor = TenantCursor(latest)

    def take(self, item: StreamEvent | Resync) -> StreamEvent | AsyncIterator[StreamEvent | Flush] | None:
        verdict = self._cursor.judge(item)
        if verdict is Verdict.NEXT and isinstance(item, StreamEvent):
            if not self._only.matches(item.data):
                return None
            self._cursor.sent(item)
            return item
        return self._missed(item) if verdict is Verdict.GAP else None

    async def _missed(self, item: StreamEvent | Resync) -> AsyncIterator[StreamEvent | Flush]:
        """What the stream missed, from Postgres: for a RESYNC, every matching event after the last one
        sent; for a gap in one request's versions, that request's events after the version sent last."""
        if isinstance(item, Resync):
            missed = self._replay.tenant_events(self._tenant_id, self._cursor.high_water, self._only)
        else:
            after_version = self._cursor.last_version(item.request_id)
            missed = self._replay.request_events(self._tenant_id, uuid.UUID(item.request_id), after_version)
        async for event in missed:
            if not isinstance(event, StreamEvent):
                yield event
            elif self._cursor.is_new(event) and self._only.matches(event.data):
                self._cursor.sent(event)
                yield event


def _decoded(message: Message) -> StreamEvent | Resync | None:
    return message if isinstance(message, Resync) else _decode_once(message)


@functools.lru_cache(maxsize=DECODED_MESSAGES)
def _decode_once(raw: bytes) -> StreamEvent | None:
    """The event a live message carries, or None; every subscriber gets the same bytes, decoded once."""
    live = decode_live_event(raw)
    if live is None:
        return None
    status = str(live.data.get("status", ""))
    return StreamEvent(live.event_id, live.topic, status, live.version, live.request_id, live.data)
