"""The gateway's hub: ONE Redis pub/sub connection per process, fanned out to every waiting stream.

A stream follows a channel through a subscription:

    async with hub.subscribe(request_channel(request_id)) as subscription:
        message = await subscription.next(timeout)  # bytes, RESYNC, or None after `timeout`

Redis here is only a fast path, so the hub:

* survives Redis going away: its reader reconnects with backoff, subscribes again, and then tells
  every subscription RESYNC (catch up from Postgres), since what was published meanwhile is gone.
  It sends RESYNC the moment Redis is lost too, so streams waiting for a live event read Postgres at
  once instead of after their keep-alive. `healthy` says whether live events are flowing, so
  streams know when to read Postgres every couple of seconds instead. A reader that fails for any
  other reason (a bug) is restarted, degraded meanwhile, so the gateway is never left without live
  events.
* bounds each subscription's buffer and remembers when it overflowed, so a slow client is closed
  with a reconnect hint (and catches up from Postgres) instead of holding others up or growing
  without bound.
* hands messages out a chunk of subscriptions at a time (gateway/hand_out.py), so a request's DONE
  does not wait behind the writing of its PROCESSING to thousands of followers.
* lets a stream that joins a channel while its first stream is still subscribing on Redis wait for
  that, so no stream reads Postgres before Redis would hand it what is published next.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator
from types import TracebackType

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from gateway.hand_out import HAND_OUT_CHUNK, HandOut
from gateway.subscription import RESYNC, SUBSCRIBER_BUFFER, Message, Resync, Subscription

__all__ = ["HAND_OUT_CHUNK", "RESYNC", "SUBSCRIBER_BUFFER", "Hub", "Message", "Resync", "Subscription"]

log = logging.getLogger(__name__)

HUB_CHANNEL = "ackflow:hub"  # always subscribed, so the connection exists before any client waits
MAX_RECONNECT_SECONDS = 5.0
SUBSCRIBE_WAIT_SECONDS = 5.0  # a later subscriber waits this long at most for the first one's SUBSCRIBE


class Hub(contextlib.AbstractAsyncContextManager["Hub"]):
    """Redis pub/sub for every stream of this process. Its reader and hand-out run inside `async with hub:`
    (the app enters it as one of its lifespans)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._subscribing: dict[str, asyncio.Event] = {}  # set once Redis has the channel's SUBSCRIBE
        self._pubsub: PubSub | None = None
        self._healthy = False
        self._ever_connected = False
        self._arrived: collections.deque[tuple[str, Message]] = collections.deque()
        self._arrival = asyncio.Event()
        # An Event rather than one Future shielded per waiter: cheaper with 10,000 waiters, and a
        # waiter that is cancelled (its client went away) cancels only its own wait.
        self._handing_out: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def healthy(self) -> bool:
        """True while live events are flowing from Redis."""
        return self._healthy

    async def __aenter__(self) -> Hub:
        self._tasks = [
            asyncio.create_task(self._read_forever(), name="hub-read"),
            asyncio.create_task(self._hand_out_forever(), name="hub-hand-out"),
        ]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._healthy = False
        await self._drop_connection()

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscription]:
        """A subscription to `channel` for the duration of the block."""
        subscription = Subscription(channel)
        subscriptions = self._subscriptions.setdefault(channel, set())
        first = not subscriptions
        subscriptions.add(subscription)
        try:
            if first:
                await self._subscribe_first(channel)
            elif (subscribing := self._subscribing.get(channel)) is not None:
                # Not before Redis has the channel: a stream reads Postgres once subscribed, and a
                # terminal event published in between would be lost to it. A lost Redis sets it (RESYNC).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(SUBSCRIBE_WAIT_SECONDS):
                        await subscribing.wait()
            yield subscription
        finally:
            subscriptions.discard(subscription)
            if not subscriptions and self._subscriptions.get(channel) is subscriptions:
                del self._subscriptions[channel]
                # Shielded: a second cancellation must not leave Redis subscribed for nobody.
                await asyncio.shield(self._tell_redis(unsubscribe=channel))

    async def handed_out(self) -> None:
        """Return once the hand-out under way (if any) has reached every subscription.

        A stream that has written its last event waits for this before it ends: ending one
        (unsubscribing, closing the response) costs more than writing an event, and the
        followers still waiting for that event should not wait for it too.
        """
        if self._handing_out is not None:
            await self._handing_out.wait()

    async def _subscribe_first(self, channel: str) -> None:
        subscribing = self._subscribing[channel] = asyncio.Event()
        try:
            await self._tell_redis(subscribe=channel)
        finally:
            subscribing.set()
            if self._subscribing.get(channel) is subscribing:
                del self._subscribing[channel]

    async def _tell_redis(self, *, subscribe: str | None = None, unsubscribe: str | None = None) -> None:
        """(Un)subscribe on Redis now if connected; else `_connect` subscribes to what is wanted then."""
        if self._pubsub is None or not self._healthy:
            return
        try:
            if subscribe is not None:
                await self._pubsub.subscribe(subscribe)
            if unsubscribe is not None:
                await self._pubsub.unsubscribe(unsubscribe)
        except (RedisError, OSError) as exc:
            self._mark_degraded(exc)

    async def _read_forever(self) -> None:
        while True:  # `_read` handles Redis errors itself; anything else must not end live events
            try:
                await self._read()
            except Exception as exc:
                log.exception("the hub's reader failed; restarting it")
                self._mark_degraded(exc)  # streams read Postgres until it is back, then catch up once
                await self._drop_connection()
                await asyncio.sleep(MAX_RECONNECT_SECONDS)

    async def _read(self) -> None:
        """Take messages off Redis as they come, reconnecting with backoff whenever Redis fails."""
        backoff = 0.1
        while True:
            try:
                if self._pubsub is not None and not self._healthy:
                    await self._drop_connection()  # a subscribe call found it broken
                if self._pubsub is None:
                    self._pubsub = await self._connect()
                    backoff = 0.1
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message.get("type") == "message":
                    channel = message["channel"]
                    name = channel.decode() if isinstance(channel, bytes) else str(channel)
                    self._arrive([(name, message["data"])])
            except (RedisError, OSError) as exc:
                self._mark_degraded(exc)
                await self._drop_connection()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_RECONNECT_SECONDS)

    async def _connect(self) -> PubSub:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            subscribed: set[str] = set()
            # Until what Redis has is what is wanted: streams come and go while we (un)subscribe, and
            # theirs skip Redis while it is not connected.
            while (wanted := {HUB_CHANNEL, *self._subscriptions}) != subscribed:
                if came := wanted - subscribed:
                    await pubsub.subscribe(*came)
                if gone := subscribed - wanted:
                    await pubsub.unsubscribe(*gone)
                subscribed = wanted
        except BaseException:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        self._healthy = True
        if self._ever_connected:
            log.info("Redis pub/sub is back; live events flow again")
            self._resync_all()  # what was published while we were away is gone
        self._ever_connected = True
        return pubsub

    def _mark_degraded(self, exc: BaseException) -> None:
        if self._healthy:
            # Redis lost, or a bug in the reader or hand-out (each logged its traceback before calling here).
            log.warning("live events degraded (%s); streams fall back to Postgres until the hub reconnects", exc)
            self._healthy = False
            self._resync_all()  # so waiting streams start reading Postgres now
        for subscribing in self._subscribing.values():
            subscribing.set()  # no later subscriber waits for a SUBSCRIBE that may never come; RESYNC covers it

    async def _drop_connection(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _arrive(self, messages: list[tuple[str, Message]]) -> None:
        self._arrived.extend(messages)
        self._arrival.set()

    def _resync_all(self) -> None:
        self._arrive([(channel, RESYNC) for channel in self._subscriptions])

    async def _hand_out_forever(self) -> None:
        while True:  # like the reader: a bug in the hand-out must not end live events
            try:
                await self._hand_out()
            except Exception as exc:
                log.exception("the hub's hand-out failed; restarting it")
                self._mark_degraded(exc)  # the reader reconnects, and RESYNCs all again once it is back
                self._arrived.clear()  # lost, like what the failed hand-out had not given out yet
                self._resync_all()  # so every stream reads Postgres now

    async def _hand_out(self) -> None:
        while True:
            await self._arrival.wait()
            self._arrival.clear()
            while self._arrived:
                self._handing_out = asyncio.Event()
                try:
                    hand_out = HandOut(self._subscriptions)
                    hand_out.take_in(self._arrived)
                    while hand_out.due:
                        hand_out.give_chunk()
                        await asyncio.sleep(0)  # let this chunk's streams write; the reader takes in what came
                        hand_out.take_in(self._arrived)
                finally:
                    self._handing_out.set()
                    self._handing_out = None
