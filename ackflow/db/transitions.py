"""Status changes: one statement updates the request (or many requests), appends its event and writes its outbox row."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg

from ackflow.contracts import CANCELLED, FAILED, INIT, PROCESSING, TOPIC_ACCEPTED, TOPIC_BATCH, TOPIC_FOR_STATUS
from ackflow.db.queries import sql
from ackflow.metrics import STATUS_TRANSITIONS


async def transition(
    db: asyncpg.Pool | asyncpg.Connection,
    request_id: str | uuid.UUID,
    to_status: str,
    from_statuses: tuple[str, ...],
    *,
    result: Any = None,
    error: dict[str, Any] | None = None,
) -> asyncpg.Record | None:
    """Move the request to `to_status` if it is in one of `from_statuses`; its new row if it moved
    (id, status, version, event_id, tenant_id, and payload and trace_context on a move to PROCESSING), else None.

    Guarded by the status it moves from, so a retried or late caller can never move a request
    backwards or record a second outcome: the first terminal status wins.
    """
    row = await db.fetchrow(
        sql("transition_request"),
        request_id if isinstance(request_id, uuid.UUID) else uuid.UUID(request_id),
        to_status,
        list(from_statuses),
        result,
        error,
        TOPIC_FOR_STATUS[to_status],
    )
    if row is not None:  # counted once the statement ran; a transaction rolled back later still counts
        STATUS_TRANSITIONS.labels(status=row["status"]).inc()
    return row


async def start_request(db: asyncpg.Pool | asyncpg.Connection, request_id: str | uuid.UUID) -> asyncpg.Record | None:
    """INIT -> PROCESSING: the row to run (as `transition` returns it), or None if the request is not
    INIT, or expired (then it ended CANCELLED in the same statement: it never starts late)."""
    row = await transition(db, request_id, PROCESSING, (INIT,))
    return row if row is not None and row["status"] == PROCESSING else None


async def start_many(db: asyncpg.Pool | asyncpg.Connection, request_ids: Iterable[str]) -> list[asyncpg.Record]:
    """`start_request` for many requests in one statement: the rows that started."""
    moved = await transition_many(db, [{"id": i, "status": PROCESSING} for i in request_ids], (INIT,))
    return [row for row in moved if row["status"] == PROCESSING]


async def cancel_unstarted(
    connection: asyncpg.Connection, request_id: str | uuid.UUID, *, error: dict[str, Any] | None = None
) -> None:
    """A request still INIT, locked by the caller, ends CANCELLED, and its accepted row goes with it if
    no relay holds it (a delayed start's, or one waiting for its key, would wait for nothing)."""
    await transition(connection, request_id, CANCELLED, (INIT,), error=error)
    await connection.execute(sql("drop_unclaimed_accept"), request_id)


async def transition_many(
    db: asyncpg.Pool | asyncpg.Connection,
    changes: list[dict[str, Any]],
    from_statuses: tuple[str, ...],
) -> list[asyncpg.Record]:
    """Many transitions in one statement: each of `changes` is {id, status, result?, error?}; the rows
    that moved come back (as `transition` returns them), the others were not in one of `from_statuses`."""
    if not changes:
        return []
    wanted = [
        {"id": str(c["id"]), "status": c["status"], "result": c.get("result"), "error": c.get("error")} for c in changes
    ]
    moved = list(await db.fetch(sql("transition_requests"), wanted, list(from_statuses)))
    for row in moved:
        STATUS_TRANSITIONS.labels(status=row["status"]).inc()
    return moved


async def fail_unstarted(db: asyncpg.Pool | asyncpg.Connection, row: asyncpg.Record, error: dict[str, Any]) -> None:
    """An outbox row that will never be dispatched (dead-lettered, dropped): if it was to start requests
    (an accepted row, or a batch row and its members), those still in INIT end FAILED with `error`.
    `row` has the outbox columns topic, request_id and request_ids."""
    if row["topic"] not in (TOPIC_ACCEPTED, TOPIC_BATCH):
        return
    members = row["request_ids"] or [row["request_id"]]
    await transition_many(db, [{"id": member, "status": FAILED, "error": error} for member in members], (INIT,))
