"""The hub's hand-out: every subscription gets its channel's messages once, in order, and only while subscribed."""

from __future__ import annotations

import collections

import pytest

from gateway.hand_out import HandOut
from gateway.subscription import Message, Subscription


async def _drain(subscription: Subscription) -> list[Message]:
    messages = []
    while (message := await subscription.next(0)) is not None:
        messages.append(message)
    return messages


async def test_a_subscription_that_leaves_mid_hand_out_gets_nothing_more_and_one_that_joins_only_what_came_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("gateway.hand_out.HAND_OUT_CHUNK", 1)  # one subscription per chunk
    stays, leaves, joins = Subscription("a"), Subscription("a"), Subscription("a")
    subscriptions = {"a": {stays, leaves}}
    arrived: collections.deque[tuple[str, Message]] = collections.deque([("a", b"before")])
    hand_out = HandOut(subscriptions)
    hand_out.take_in(arrived)
    hand_out.give_chunk()  # one of the two got "before"; the other is still due

    subscriptions["a"].discard(leaves)  # its stream ended while the hand-out was under way
    subscriptions["a"].add(joins)
    arrived.append(("a", b"after"))
    hand_out.take_in(arrived)
    while hand_out.due:
        hand_out.give_chunk()

    assert await _drain(stays) == [b"before", b"after"]
    assert await _drain(leaves) in ([], [b"before"]), "nothing after it left"
    assert await _drain(joins) == [b"after"], "nothing from before it subscribed"


async def test_messages_that_arrive_between_chunks_join_the_hand_out_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.hand_out.HAND_OUT_CHUNK", 2)
    on_a = [Subscription("a") for _ in range(5)]
    hand_out = HandOut({"a": set(on_a)})
    arrived: collections.deque[tuple[str, Message]] = collections.deque([("a", b"1")])
    hand_out.take_in(arrived)
    hand_out.give_chunk()
    arrived.append(("a", b"2"))
    hand_out.take_in(arrived)
    while hand_out.due:
        hand_out.give_chunk()
    assert [await _drain(subscription) for subscription in on_a] == [[b"1", b"2"]] * 5
