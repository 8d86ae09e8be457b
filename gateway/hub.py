"""The gateway's hub: ONE Redis pub/sub connection per process, fanned out to every waiting client.

Built on Litestar's channels plugin (subscribe/unsubscribe bookkeeping, per-subscriber queues) with
two additions the stock Redis backend lacks, because Redis here is only a fast path:

* `ResilientPubSubBackend` survives Redis going away. The stock backend's event loop ends on the
  first connection error and never comes back; this one reconnects with backoff, re-subscribes,
  and then tells every subscriber to `RESYNC` (catch up from Postgres), since messages published
  while it was away are gone. It also sends `RESYNC` the moment Redis is lost, so streams waiting
  for a live event start reading Postgres at once instead of after their keep-alive timeout.
  `healthy` says whether live events are flowing, so streams know when to read Postgres every
  couple of seconds instead.
* `StreamSubscriber` has a bounded buffer and remembers when it overflowed, so a slow client is
  closed with a reconnect hint (and catches up from Postgres) instead of holding others up or
  growing without bound.
* `HubChannelsPlugin` hands messages out a chunk of subscribers at a time and takes in what Redis
  delivered meanwhile, so a request's DONE does not wait behind the writing of its PROCESSING to
  thousands of followers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncGenerator, Iterable

from litestar.channels import ChannelsPlugin
from litestar.channels.backends.base import ChannelsBackend
from litestar.channels.subscriber import Subscriber
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

RESYNC = b"\x00resync"  # not JSON, so it can never be mistaken for a published event
HUB_CHANNEL = "ackflow:hub"  # always subscribed, so the connection exists before any client waits
MAX_RECONNECT_SECONDS = 5.0
SUBSCRIBER_BUFFER = 64
HAND_OUT_CHUNK = 500  # subscribers handed a message before their streams get to write it
HAND_OUT_MESSAGES = 64  # messages one hand-out takes in at most; later ones wait for the next


class ResilientPubSubBackend(ChannelsBackend):
    """Redis pub/sub for the channels plugin that reconnects, and says when it is degraded."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._channels: set[str] = set()
        self._pubsub: PubSub | None = None
        self._healthy = False
        self._ever_connected = False
        self._wake_streams = False

    @property
    def healthy(self) -> bool:
        """True while live events are flowing from Redis."""
        return self._healthy

    async def on_startup(self) -> None:
        pass

    async def on_shutdown(self) -> None:
        await self._drop_connection()

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        for channel in channels:
            await self._redis.publish(channel, data)

    async def subscribe(self, channels: Iterable[str]) -> None:
        new = set(channels) - self._channels
        self._channels |= new
        if new and self._pubsub is not None and self._healthy:
            try:
                await self._pubsub.subscribe(*new)
            except (RedisError, OSError) as exc:
                self._mark_degraded(exc)

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        gone = set(channels) & self._channels
        self._channels -= gone
        if gone and self._pubsub is not None and self._healthy:
            try:
                await self._pubsub.unsubscribe(*gone)
            except (RedisError, OSError) as exc:
                self._mark_degraded(exc)

    async def stream_events(self) -> AsyncGenerator[tuple[str, bytes], None]:
        """Yield (channel, message) forever, reconnecting with backoff whenever Redis fails."""
        backoff = 0.1
        while True:
            if self._wake_streams:  # Redis was lost or is back: every stream must look at Postgres
                self._wake_streams = False
                for channel in list(self._channels):
                    yield channel, RESYNC
            try:
                if self._pubsub is not None and not self._healthy:
                    await self._drop_connection()  # a subscribe call found it broken
                if self._pubsub is None:
                    await self._connect()
                    backoff = 0.1
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)  # type: ignore[union-attr]
                if message is not None and message.get("type") == "message":
                    channel = message["channel"]
                    yield channel.decode() if isinstance(channel, bytes) else str(channel), message["data"]
            except (RedisError, OSError) as exc:
                self._mark_degraded(exc)
                await self._drop_connection()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_RECONNECT_SECONDS)

    async def get_history(self, channel: str, limit: int | None = None) -> list[bytes]:
        return []  # history lives in Postgres (request_events), not in Redis

    async def _connect(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(HUB_CHANNEL, *self._channels)
        except BaseException:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        self._pubsub = pubsub
        if self._ever_connected:
            log.info("Redis pub/sub is back; live events flow again")
            self._wake_streams = True  # what was published while we were away is gone
        self._ever_connected = True
        self._healthy = True

    def _mark_degraded(self, exc: BaseException) -> None:
        if self._healthy:
            log.warning("Redis pub/sub lost (%s); streams fall back to Postgres until it is back", exc)
            self._wake_streams = True  # so waiting streams start polling Postgres now
        self._healthy = False

    async def _drop_connection(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


class StreamSubscriber(Subscriber):
    """A bounded subscriber that records overflow instead of blocking the hub."""

    overflowed = False

    def put_nowait(self, item: bytes | None) -> bool:
        accepted = super().put_nowait(item)
        if not accepted:
            self.overflowed = True
        return accepted

    async def put(self, item: bytes | None) -> None:
        # The plugin puts None to stop a subscriber; on a full buffer that must not wait for a reader
        # that may be gone, so make room for it.
        if item is None and not super().put_nowait(None):
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
            super().put_nowait(None)
            return
        if item is not None:
            await super().put(item)

    async def next_message(self, timeout: float) -> bytes | None:
        """The next message, or None after `timeout` seconds (or when unsubscribed)."""
        try:
            async with asyncio.timeout(timeout):  # not wait_for: on 3.11 that is a new Task per message
                item = await self._queue.get()
        except TimeoutError:
            return None
        self._queue.task_done()
        return bytes(item) if item is not None else None


class HubChannelsPlugin(ChannelsPlugin):
    """The channels plugin, handing each message out a chunk of subscribers at a time.

    The stock plugin puts a message into every subscriber's queue at once and reads the next one only
    after all their streams have run. A request's PROCESSING and DONE come a few milliseconds apart;
    with 10,000 followers, writing PROCESSING to all of them took about half a second, and DONE
    waited behind it. Here a reader task takes messages off Redis as they come, and the hand-out
    lets each chunk's streams write before it goes on. Between chunks it takes in what arrived:
    subscribers not yet reached get the new messages queued behind the earlier ones (so their
    stream writes both at once), and those already reached get them in a later chunk. Each
    subscriber still gets its channels' messages in the order Redis delivered them.

    It replaces the plugin's `_sub_worker` (Litestar 2's loop that feeds subscribers), which is not
    public API: tests/integration/test_hub.py checks the hand-out, so a Litestar upgrade that drops
    the hook shows there.
    """

    # An Event rather than one Future shielded per waiter: cheaper with 10,000 waiters, and a
    # waiter that is cancelled (its client went away) cancels only its own wait.
    _handing_out: asyncio.Event | None = None

    async def handed_out(self) -> None:
        """Return once the hand-out under way (if any) has reached every subscriber.

        A stream that has written its last event waits for this before it ends: ending one
        (unsubscribing, closing the response) costs more than writing an event, and the
        followers still waiting for that event should not wait for it too.
        """
        if self._handing_out is not None:
            await self._handing_out.wait()

    async def _sub_worker(self) -> None:
        arrived: collections.deque[tuple[str, bytes]] = collections.deque()
        wake = asyncio.Event()
        reader = asyncio.create_task(self._read(arrived, wake), name="hub-read")
        try:
            while True:
                await wake.wait()
                wake.clear()
                while arrived:
                    self._handing_out = asyncio.Event()
                    try:
                        await self._hand_out(arrived)
                    finally:
                        self._handing_out.set()
                        self._handing_out = None
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, arrived: collections.deque[tuple[str, bytes]], wake: asyncio.Event) -> None:
        while True:  # the backend handles Redis errors itself; anything else must not end live events
            try:
                async for message in self._backend.stream_events():
                    arrived.append(message)
                    wake.set()
            except Exception:
                log.exception("the hub's reader failed; restarting it")
                await asyncio.sleep(MAX_RECONNECT_SECONDS)

    async def _hand_out(self, arrived: collections.deque[tuple[str, bytes]]) -> None:
        """Give every subscriber of the arrived messages' channels its messages, in order."""
        messages: list[tuple[str, bytes]] = []
        given: dict[Subscriber, int] = {}  # how far into `messages` each subscriber has been served
        due: collections.deque[Subscriber] = collections.deque()
        queued: set[Subscriber] = set()

        def take_in() -> None:
            start = len(messages)
            while arrived and len(messages) < HAND_OUT_MESSAGES:
                messages.append(arrived.popleft())
            for channel in dict.fromkeys(channel for channel, _ in messages[start:]):
                for subscriber in self._channels.get(channel, ()):
                    if subscriber not in queued:
                        queued.add(subscriber)
                        due.append(subscriber)

        take_in()
        while due:
            for _ in range(min(HAND_OUT_CHUNK, len(due))):
                subscriber = due.popleft()
                queued.discard(subscriber)
                for channel, payload in messages[given.get(subscriber, 0) :]:
                    if subscriber in self._channels.get(channel, ()):  # still subscribed
                        subscriber.put_nowait(payload)
                given[subscriber] = len(messages)
            await asyncio.sleep(0)  # let this chunk's streams write; the reader takes in what came
            take_in()


def create_channels(redis: Redis) -> tuple[HubChannelsPlugin, ResilientPubSubBackend]:
    """The channels plugin wired to a resilient backend; both are needed (the backend says `healthy`)."""
    backend = ResilientPubSubBackend(redis)
    plugin = HubChannelsPlugin(
        backend=backend,
        arbitrary_channels_allowed=True,
        create_ws_route_handlers=False,
        subscriber_max_backlog=SUBSCRIBER_BUFFER,
        subscriber_backlog_strategy="backoff",
        subscriber_class=StreamSubscriber,
    )
    return plugin, backend
