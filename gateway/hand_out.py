"""How the hub gives what arrived from Redis to the subscriptions of its channels, a chunk at a time."""

from __future__ import annotations

import collections

from gateway.subscription import Message, Subscription

HAND_OUT_CHUNK = 500  # subscriptions handed a message before their streams get to write it
HAND_OUT_MESSAGES = 64  # messages one hand-out takes in at most; later ones wait for the next


class HandOut:
    """Messages that arrived, given to every subscription of their channels a chunk at a time.

    Putting a message into every subscription at once and reading the next only after all their
    streams ran made DONE wait: a request's PROCESSING and DONE come a few milliseconds apart, and
    with 10,000 followers writing PROCESSING to all of them took about half a second. So each chunk's
    streams write before the hand-out goes on, and between chunks it takes in what arrived:
    subscriptions not yet reached get the new messages queued behind the earlier ones (their stream
    writes both at once), those already reached get them in a later chunk. Each subscription still
    gets its channel's messages in the order Redis delivered them, and only while it is subscribed:
    one that left meanwhile gets nothing more, one that joined meanwhile only what was taken in after.
    """

    def __init__(self, subscriptions: dict[str, set[Subscription]]) -> None:
        self._subscriptions = subscriptions  # the hub's own, live: who is subscribed now
        self._messages: dict[str, list[Message]] = {}  # taken in, by channel, in arrival order
        self._taken = 0
        self._given: dict[Subscription, int] = {}  # how many of its channel's messages each was given (or skips)
        self._scheduled: set[Subscription] = set()
        self.due: collections.deque[Subscription] = collections.deque()

    def take_in(self, arrived: collections.deque[tuple[str, Message]]) -> None:
        """Take in what arrived (HAND_OUT_MESSAGES at most in all) and queue the subscriptions it is for."""
        starts: dict[str, int] = {}  # per channel, where this take-in's messages begin
        while arrived and self._taken < HAND_OUT_MESSAGES:
            channel, message = arrived.popleft()
            messages = self._messages.setdefault(channel, [])
            starts.setdefault(channel, len(messages))
            messages.append(message)
            self._taken += 1
        for channel, start in starts.items():
            for subscription in self._subscriptions.get(channel, ()):
                if subscription not in self._scheduled:
                    self._scheduled.add(subscription)
                    self._given.setdefault(subscription, start)  # a newcomer skips what came before it
                    self.due.append(subscription)

    def give_chunk(self) -> None:
        """Give the next HAND_OUT_CHUNK due subscriptions what they have not been given yet."""
        subscriptions = self._subscriptions
        for _ in range(min(HAND_OUT_CHUNK, len(self.due))):
            subscription = self.due.popleft()
            self._scheduled.discard(subscription)
            if subscription not in subscriptions.get(subscription.channel, ()):
                continue  # it left while the hand-out was under way
            messages = self._messages[subscription.channel]
            for message in messages[self._given[subscription] :]:
                subscription.deliver(message)
            self._given[subscription] = len(messages)
