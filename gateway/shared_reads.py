"""One Postgres read shared by every stream that asks for the same rows at the same moment."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


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
