"""A stream's subscription to one hub channel: its messages in order, in a bounded buffer, and RESYNC."""

from __future__ import annotations

import asyncio
import collections

SUBSCRIBER_BUFFER = 64


class Resync:
    """Live messages may have been lost (Redis went away, or came back): read Postgres."""

    def __repr__(self) -> str:
        return "RESYNC"


RESYNC = Resync()
Message = bytes | Resync


class Subscription:
    """One stream's messages from one channel, in the order Redis delivered them, in a bounded buffer."""

    __slots__ = ("_messages", "_waiter", "_woken", "channel", "overflowed")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.overflowed = False  # a message was dropped: the stream must end and its client catch up
        self._messages: collections.deque[Message] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False

    @property
    def pending(self) -> int:
        """How many messages have arrived that `next` has not returned yet."""
        return len(self._messages)

    async def next(self, timeout: float) -> Message | None:
        """The next message; None after `timeout` seconds, or at once after `wake()`."""
        if not self._messages and not self._woken and timeout > 0:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            # A timer, not asyncio.timeout or wait_for: this wait runs once per follower per event,
            # and a timeout that cancels the task costs far more than a timer that resolves a future.
            timer = loop.call_later(timeout, _resolve, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        self._woken = False
        return self._messages.popleft() if self._messages else None

    def wake(self) -> None:
        """Make the waiting `next` (or else the next one) return at once, so its stream looks why."""
        self._woken = True
        if self._waiter is not None:
            _resolve(self._waiter)

    def clear_overflow(self) -> None:
        """Drop what is queued and the overflow, for a follower that has just caught up from the record
        (all it missed included) and follows on instead of ending."""
        self._messages.clear()
        self.overflowed = False

    def deliver(self, message: Message) -> None:
        """The hub's side: queue `message`, or drop it and note the overflow when the buffer is full."""
        if len(self._messages) >= SUBSCRIBER_BUFFER:
            self.overflowed = True
            return
        self._messages.append(message)
        if self._waiter is not None:
            _resolve(self._waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
