"""Following requests live: replay from Postgres, then Redis events, in order, without duplicates.

Every stream (SSE, WebSocket, long poll) starts the same way: subscribe to the live channel first,
then read what Postgres already has, so nothing committed in between can be missed. After that,
a live event whose version is the next one is passed on directly; a duplicate (version already
seen) is dropped; a gap (a version skipped: a message lost or reordered) is filled from Postgres.
While the hub is degraded (Redis down) streams read Postgres every `poll_seconds`; when it comes
back the hub sends RESYNC and every stream catches up once. Redis is never the record.

One event may go to thousands of streams, so what is the same for all of them is done once: a
live message is decoded once (every subscriber gets the same bytes), an event is encoded for SSE
once, and the Postgres read that a gap or a RESYNC calls for is shared by every stream asking
for the same thing at the same moment.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg
import msgspec

from ackflow.contracts import TERMINAL_STATUSES
from ackflow.db.queries import sql
from ackflow.errors import TooManyRequests
from ackflow.live import decode_live_event, request_channel, tenant_channel
from ackflow.sse import event_frame
from gateway.hub import RESYNC, HubChannelsPlugin, ResilientPubSubBackend, StreamSubscriber

TENANT_REPLAY_LIMIT = 1000
TRACKED_REQUESTS = 10_000
T = TypeVar("T")
DECODED_MESSAGES = 128  # live messages kept decoded while their fan-out runs (bounds memory, not correctness)


@dataclass(frozen=True)
class StreamEvent:
    """One status event as clients see it: `id` is the request_events id (the SSE id)."""

    id: int
    topic: str
    status: str
    version: int
    request_id: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @functools.cached_property
    def sse(self) -> bytes:
        """The event as an SSE frame, encoded once however many clients it is written to."""
        return event_frame(str(self.id), self.topic, msgspec.json.encode(self.data).decode())


class KeepAlive:
    """Nothing happened for a while; say so, so proxies keep the connection open."""


class Overflow:
    """The client read too slowly and its buffer filled: close, and let it reconnect and catch up."""


class Flush:
    """Nothing more is queued for this stream: write what has been gathered (one write for a burst)."""


KEEPALIVE = KeepAlive()
OVERFLOW = Overflow()
FLUSH = Flush()
StreamItem = StreamEvent | KeepAlive | Overflow | Flush


@dataclass(frozen=True)
class StreamPosition:
    status: str
    version: int
    seen_version: int

    @property
    def finished_for_client(self) -> bool:
        """The request ended and the client has seen its last event: nothing more will come."""
        return self.status in TERMINAL_STATUSES and self.seen_version >= self.version


class SharedReads(Generic[T]):
    """One read for every caller that asks for the same thing before it is sent.

    When an event reaches thousands of followers of one request with a gap before it, or Redis
    comes back, they all need the same rows at once; one query answers them all. Only callers
    that asked before the query went out share it, so each still sees all that was committed
    before it asked (a later caller sends a new one).
    """

    def __init__(self) -> None:
        self._waiting: dict[Hashable, asyncio.Task[T]] = {}

    async def share(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        """What `read` returns, from a read already waiting to go out under `key` if there is one."""
        task = self._waiting.get(key)
        if task is None:
            task = asyncio.create_task(self._send(key, read))
            self._waiting[key] = task
        return await asyncio.shield(task)  # one caller going away does not cancel it for the others

    async def _send(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        # A task first runs after the callbacks already scheduled: every stream woken by the same
        # message has joined by now.
        del self._waiting[key]
        return await read()


class Streams:
    """What every stream needs: Postgres, the channels plugin and its backend's health, the timings."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        channels: HubChannelsPlugin,
        backend: ResilientPubSubBackend,
        *,
        keepalive_seconds: float,
        poll_seconds: float,
        max_per_tenant: int = 5000,
    ) -> None:
        self.pool = pool
        self.max_per_tenant = max_per_tenant
        self._open: collections.Counter[uuid.UUID] = collections.Counter()
        self.channels = channels
        self.backend = backend
        self.keepalive_seconds = keepalive_seconds
        self.poll_seconds = poll_seconds
        self._reads: SharedReads[list[StreamEvent]] = SharedReads()

    def open_stream(self, tenant_id: uuid.UUID) -> Callable[[], None]:
        """Count a stream against the tenant's limit on this gateway; call what it returns when it ends."""
        if self._open[tenant_id] >= self.max_per_tenant:
            raise TooManyRequests(
                f"this tenant already has {self.max_per_tenant} open streams on this gateway; close some first",
                retry_after=5,
            )
        self._open[tenant_id] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._open[tenant_id] -= 1
                if self._open[tenant_id] <= 0:
                    del self._open[tenant_id]

        return release

    async def position(self, tenant_id: uuid.UUID, request_id: uuid.UUID, last_event_id: int) -> StreamPosition | None:
        row = await self.pool.fetchrow(sql("request_stream_position"), request_id, tenant_id, last_event_id)
        return None if row is None else StreamPosition(row["status"], row["version"], row["seen_version"])

    async def follow_request(
        self, tenant_id: uuid.UUID, request_id: uuid.UUID, seen_version: int
    ) -> AsyncIterator[StreamItem]:
        """Every event of the request after `seen_version`, in order, ending after the terminal one."""
        rid = str(request_id)
        async with self.channels.start_subscription(request_channel(rid)) as subscriber:
            assert isinstance(subscriber, StreamSubscriber)
            last = seen_version
            for event in await self._request_events(tenant_id, request_id, last):
                yield event
                last = event.version
                if event.terminal:
                    return
            async for item in self._live(subscriber):
                if not isinstance(item, StreamEvent | bytes):
                    yield item
                    if item is OVERFLOW:
                        return
                    continue
                live = item if isinstance(item, StreamEvent) else None
                if live is not None and (live.request_id != rid or live.version <= last):
                    continue  # another request's message, or one already sent
                if live is not None and live.version == last + 1:
                    fresh = [live]
                else:  # a gap, a resync, or Redis degraded: Postgres has the truth
                    fresh = await self._request_events(tenant_id, request_id, last)
                for event in fresh:
                    yield event
                    last = event.version
                    if event.terminal:
                        yield FLUSH  # write it now; then end only once every follower has it
                        await self.channels.handed_out()
                        return

    async def follow_tenant(
        self, tenant_id: uuid.UUID, last_event_id: int | None, kind: str | None, status: str | None
    ) -> AsyncIterator[StreamItem]:
        """The tenant's events, optionally filtered by kind and status; replays after `last_event_id`."""
        tid = str(tenant_id)
        async with self.channels.start_subscription(tenant_channel(tid)) as subscriber:
            assert isinstance(subscriber, StreamSubscriber)
            if last_event_id is None:
                last_event_id = await self.pool.fetchval(sql("latest_tenant_event_id"), tenant_id)
            seen: collections.OrderedDict[str, int] = collections.OrderedDict()
            high_water = last_event_id
            for event in await self._tenant_events(tenant_id, high_water, kind, status):
                high_water = max(high_water, event.id)
                _remember(seen, event)
                yield event
            async for item in self._live(subscriber):
                if not isinstance(item, StreamEvent | bytes):
                    yield item
                    if item is OVERFLOW:
                        return
                    continue
                if isinstance(item, StreamEvent):
                    previous = seen.get(item.request_id)
                    if item.id <= last_event_id or (previous is not None and item.version <= previous):
                        continue
                    if previous is not None and item.version > previous + 1:  # a gap in a request we follow
                        missed = await self._request_events(tenant_id, uuid.UUID(item.request_id), previous)
                        fresh = [e for e in missed if _matches(e.data, kind, status)]
                    else:
                        fresh = [item] if _matches(item.data, kind, status) else []
                else:
                    fresh = await self._tenant_events(tenant_id, high_water, kind, status)
                for event in fresh:
                    if event.version > seen.get(event.request_id, 0):
                        high_water = max(high_water, event.id)
                        _remember(seen, event)
                        yield event

    async def wait_until_terminal(self, tenant_id: uuid.UUID, request_id: uuid.UUID, timeout: float) -> None:
        """Return when the request has ended, or after `timeout` seconds, whichever is first."""
        deadline = time.monotonic() + timeout
        async with self.channels.start_subscription(request_channel(str(request_id))) as subscriber:
            assert isinstance(subscriber, StreamSubscriber)
            while True:
                position = await self.position(tenant_id, request_id, 0)
                if position is None or position.status in TERMINAL_STATUSES:
                    return
                while (left := deadline - time.monotonic()) > 0:
                    wait = left if self.backend.healthy else min(left, self.poll_seconds)
                    raw = await subscriber.next_message(wait)
                    live = _decode_once(raw) if raw and raw != RESYNC else None
                    if raw == RESYNC or (live and live.terminal):
                        break
                    if raw is None and not self.backend.healthy:
                        break
                else:
                    return

    async def _live(
        self, subscriber: StreamSubscriber
    ) -> AsyncIterator[StreamEvent | bytes | KeepAlive | Overflow | Flush]:
        """Live events, RESYNC (as bytes) when Postgres must be read, keep-alives and overflow; FLUSH
        whenever nothing more is queued, before waiting (the replay before it included)."""
        last_write = time.monotonic()
        while True:
            if not subscriber.qsize:
                yield FLUSH
            until_keepalive = self.keepalive_seconds - (time.monotonic() - last_write)
            wait = until_keepalive if self.backend.healthy else min(until_keepalive, self.poll_seconds)
            raw = await subscriber.next_message(max(wait, 0.0))
            if subscriber.overflowed:
                yield OVERFLOW
                return
            if raw is None:
                if not self.backend.healthy:
                    yield RESYNC
                if time.monotonic() - last_write >= self.keepalive_seconds:
                    last_write = time.monotonic()
                    yield KEEPALIVE
                continue
            if raw == RESYNC:
                yield RESYNC
                continue
            live = _decode_once(raw)
            if live is not None:
                last_write = time.monotonic()
                yield live

    async def _request_events(
        self, tenant_id: uuid.UUID, request_id: uuid.UUID, after_version: int
    ) -> list[StreamEvent]:
        async def read() -> list[StreamEvent]:
            rows = await self.pool.fetch(sql("request_events_after_version"), request_id, tenant_id, after_version)
            return [_from_row(row) for row in rows]

        return await self._reads.share((tenant_id, request_id, after_version), read)

    async def _tenant_events(
        self, tenant_id: uuid.UUID, after_id: int, kind: str | None, status: str | None
    ) -> list[StreamEvent]:
        rows = await self.pool.fetch(sql("tenant_events_after"), tenant_id, after_id, kind, status, TENANT_REPLAY_LIMIT)
        return [_from_row(row) for row in rows]


def _from_row(row: Any) -> StreamEvent:
    return StreamEvent(row["id"], row["topic"], row["status"], row["version"], str(row["request_id"]), row["data"])


@functools.lru_cache(maxsize=DECODED_MESSAGES)
def _decode_once(raw: bytes) -> StreamEvent | None:
    """The event a live message carries, or None; every subscriber gets the same bytes, decoded once."""
    live = decode_live_event(raw)
    if live is None:
        return None
    status = str(live.data.get("status", ""))
    return StreamEvent(live.event_id, live.topic, status, live.version, live.request_id, live.data)


def _matches(data: dict[str, Any], kind: str | None, status: str | None) -> bool:
    return (kind is None or data.get("kind") == kind) and (status is None or data.get("status") == status)


def _remember(seen: collections.OrderedDict[str, int], event: StreamEvent) -> None:
    seen[event.request_id] = event.version
    seen.move_to_end(event.request_id)
    if len(seen) > TRACKED_REQUESTS:
        seen.popitem(last=False)
