"""A hub subscription: messages in order, a bounded buffer that notes overflow, a wait that can be cut short."""

from __future__ import annotations

import asyncio
import time

from gateway.hub import RESYNC, SUBSCRIBER_BUFFER, Subscription


async def test_messages_come_out_in_the_order_delivered_and_none_after_the_timeout() -> None:
    subscription = Subscription("a")
    subscription.deliver(b"one")
    subscription.deliver(RESYNC)
    subscription.deliver(b"two")
    assert subscription.pending == 3
    assert [await subscription.next(1) for _ in range(3)] == [b"one", RESYNC, b"two"]
    started = time.monotonic()
    assert await subscription.next(0.05) is None
    assert time.monotonic() - started >= 0.04


async def test_a_waiting_next_returns_a_message_as_soon_as_it_is_delivered() -> None:
    subscription = Subscription("a")
    waiting = asyncio.create_task(subscription.next(10))
    done, _ = await asyncio.wait({waiting}, timeout=0.05)
    assert not done, "nothing was delivered: it waits"
    subscription.deliver(b"live")
    assert await asyncio.wait_for(waiting, 1) == b"live"


async def test_wake_cuts_a_wait_short_and_a_wake_before_the_wait_is_not_lost() -> None:
    subscription = Subscription("a")
    waiting = asyncio.create_task(subscription.next(10))
    done, _ = await asyncio.wait({waiting}, timeout=0.05)
    assert not done, "nothing was delivered: it waits"
    subscription.wake()
    assert await asyncio.wait_for(waiting, 1) is None
    subscription.wake()  # e.g. its key revoked while the stream was writing, not waiting
    assert await asyncio.wait_for(subscription.next(10), 1) is None
    assert await subscription.next(0.01) is None, "one wake cuts one wait short"


async def test_a_full_buffer_drops_what_comes_and_says_it_overflowed() -> None:
    subscription = Subscription("a")
    for number in range(SUBSCRIBER_BUFFER + 1):
        subscription.deliver(str(number).encode())
    assert subscription.overflowed
    assert subscription.pending == SUBSCRIBER_BUFFER
    assert await subscription.next(1) == b"0"


async def test_clearing_an_overflow_drops_what_is_queued_and_lets_the_follower_go_on() -> None:
    subscription = Subscription("a")
    for number in range(SUBSCRIBER_BUFFER + 1):
        subscription.deliver(str(number).encode())
    subscription.clear_overflow()  # its follower caught up from the record, all it missed included
    assert not subscription.overflowed
    assert subscription.pending == 0
    subscription.deliver(b"after")
    assert await subscription.next(1) == b"after"
    assert not subscription.overflowed
