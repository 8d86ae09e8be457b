"""The accept path's one statement, for the gateway and for tests that need requests as it makes them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from ackflow.db.queries import sql


async def accept_request(
    db: asyncpg.Pool | asyncpg.Connection,
    request_id: uuid.UUID,
    tenant_id: uuid.UUID,
    kind: str,
    payload: Any,
    *,
    callback_url: str | None = None,
    callback_events: list[str] | None = None,
    trace_context: str | None = None,
    run_at: datetime | None = None,
    delay_seconds: float | None = None,
    expires_at: datetime | None = None,
    ttl_seconds: float | None = None,
) -> asyncpg.Record | None:
    """Commit the request (INIT), its first event and its outbox row; None if no worker handles `kind`.
    `trace_context`: the W3C traceparent of the span that accepted it (ackflow/tracing.py), or None.
    `run_at` or `delay_seconds`: start it no earlier than then; `expires_at` or `ttl_seconds`: if it has
    not started by then, it ends CANCELLED (both by the database's clock)."""
    row: asyncpg.Record | None = await db.fetchrow(
        sql("accept_request"),
        request_id,
        tenant_id,
        kind,
        payload,
        callback_url,
        callback_events,
        trace_context,
        run_at,
        delay_seconds,
        expires_at,
        ttl_seconds,
    )
    return row
