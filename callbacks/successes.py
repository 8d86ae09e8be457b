"""Succeeded attempts, recorded many to a statement: the common outcome costs Postgres one round
trip a batch instead of two a delivery.

A success recorded while a batch is being written goes in the next one, which starts as soon as
that write is done (group commit): a lone success is written at once, and under load each batch
holds what finished during one round trip. A caller returns only once its attempt is written, so
attempts not yet recorded still count against the dispatcher's in-flight limit and keep their lease.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ackflow.contracts import DeliveryState
from ackflow.db.queries import sql
from ackflow.group_commit import GroupCommit


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
    owned_states: tuple[DeliveryState, ...]  # recorded only if the delivery is still in one of them


class SuccessRecorder:
    """Writes succeeded attempts to the delivery log in batches (a GroupCommit)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._writes: GroupCommit[Success, bool] = GroupCommit(self._write)

    async def record(self, success: Success) -> bool:
        """Record the attempt; return once it is written (or raise what writing it raised): False if it
        was not, as its delivery had moved on (another attempter recorded first)."""
        return await self._writes.submit(success)

    async def _write(self, batch: list[Success]) -> list[bool]:
        endpoint_ids = list({s.endpoint_id for s in batch if s.endpoint_id is not None})
        rows = await self._pool.fetch(
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
            [",".join(s.owned_states) for s in batch],
        )
        recorded = {row["id"] for row in rows}
        return [s.delivery_id in recorded for s in batch]
