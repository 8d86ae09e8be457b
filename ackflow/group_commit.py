"""Group commit: calls made while one write is under way are written together by the next.

Many coroutines each want one small write (a request's DONE, a status event's fan-out). Each
`submit` waits for its item to be written; the first starts a writer at once (no added latency
when idle), and every item submitted while that write runs is written by the next, in one call of
`write` (one statement, one pipeline). Under load the writes fill; the per-item cost falls with
them. A write that raises fails every item it held (each caller decides what that means); items
submitted later go into the next write as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class GroupCommit(Generic[Item, Outcome]):
    """Writes submitted items in groups of at most `max_items`; `write` returns one outcome per item, in order."""

    def __init__(self, write: Callable[[list[Item]], Awaitable[list[Outcome]]], *, max_items: int = 500) -> None:
        self._write = write
        self._max_items = max_items
        self._waiting: list[tuple[Item, asyncio.Future[Outcome]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Outcome:
        """Wait until `item` is written; its outcome, or the write's exception."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="group-commit")
        # A caller that stops waiting leaves its item to be written anyway: the writes are idempotent.
        return await asyncio.shield(future)

    async def _write_all(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting[: self._max_items], self._waiting[self._max_items :]
            try:
                outcomes = await self._write([item for item, _ in group])
                if len(outcomes) != len(group):
                    raise RuntimeError(f"a group write returned {len(outcomes)} outcomes for {len(group)} items")
            except BaseException as exc:  # handed to every waiter of this group
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):  # shutting down: nothing more is written
                    for _, waiting in self._waiting:
                        waiting.cancel()
                    self._waiting = []
                    raise
                continue
            for (_, future), outcome in zip(group, outcomes, strict=False):
                if not future.done():
                    future.set_result(outcome)
