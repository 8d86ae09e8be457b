"""Status changes: one statement updates the request, appends its event and writes its outbox row."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from ackflow.contracts import TOPIC_FOR_STATUS
from ackflow.db.queries import sql


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
    (id, status, version, event_id, and payload on a move to PROCESSING), else None.

    Guarded by the status it moves from, so a retried or late caller can never move a request
    backwards or record a second outcome: the first terminal status wins.
    """
    return await db.fetchrow(
        sql("transition_request"),
        request_id if isinstance(request_id, uuid.UUID) else uuid.UUID(request_id),
        to_status,
        list(from_statuses),
        result,
        error,
        TOPIC_FOR_STATUS[to_status],
    )
