"""Succeeded attempts, recorded many to a statement: the common outcome costs Postgres one round
trip a batch instead of two a delivery.

A success recorded while a batch is being written goes in the next one, which starts as soon as
that write is done (group commit): a lone success is written at once, and under load each batch
holds what finished during one round trip. A caller returns only once its attempt is written, so
attempts not yet recorded still count against the dispatcher's in-flight limit and keep their lease.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ackflow.db.queries import sql


@dataclass(frozen=True)
class Success:
    """One succeeded attempt, as the delivery log keeps it."""

    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID | None
    attempt: int
    trigger: str
    attempted_at: datetime
    status_code: int
    latency_ms: int
    response_body: str | None
    url: str


class SuccessRecorder:
    """Writes succeeded attempts to the delivery log in batches."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._waiting: list[tuple[Success, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, success: Success) -> None:
        """Record the attempt; return once it is written (or raise what writing it raised)."""
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((success, written))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all())
        await written

    async def _write_all(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    await self._write([success for success, _ in batch])
                except BaseException as exc:  # each caller learns it, as it would have from its own statement
                    _settle(batch, exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    _settle(batch, None)
        finally:
            self._writer = None
            _settle(self._waiting, asyncio.CancelledError())  # left only if this task was cancelled
            self._waiting = []

    async def _write(self, batch: list[Success]) -> None:
        endpoint_ids = list({s.endpoint_id for s in batch if s.endpoint_id is not None})
        await self._pool.execute(
            sql("record_successes"),
            [s.delivery_id for s in batch],
            [s.attempt for s in batch],
            [s.trigger for s in batch],
            [s.attempted_at for s in batch],
            [s.status_code for s in batch],
            [s.latency_ms for s in batch],
            [s.response_body for s in batch],
            [s.url for s in batch],
            endpoint_ids,
        )


def _settle(batch: list[tuple[Success, asyncio.Future[None]]], error: BaseException | None) -> None:
    for _, written in batch:
        if written.done():  # its caller was cancelled and waits no more
            continue
        if error is None:
            written.set_result(None)
        else:
            written.set_exception(error)
