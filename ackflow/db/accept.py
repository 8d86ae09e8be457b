"""The accept path's one statement, for the gateway and for tests that need requests as it makes them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from ackflow.contracts import KEY_QUEUE
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
    concurrency_key: str | None = None,
    concurrency_limit: int | None = None,
    concurrency_policy: str = KEY_QUEUE,
    priority: int | None = None,
    priority_aging_seconds: float = 60.0,
    tags: list[str] | None = None,
    submitted_batch_id: uuid.UUID | None = None,
) -> asyncpg.Record | None:
    """Commit the request (INIT), its first event and its outbox row; None if no worker handles `kind`,
    a row with a None id if `concurrency_policy` is skip and the key is full (nothing was written).
    `trace_context`: the W3C traceparent of the span that accepted it (ackflow/tracing.py), or None.
    `run_at` or `delay_seconds`: start it no earlier than then; `expires_at` or `ttl_seconds`: if it has
    not started by then, it ends CANCELLED (both by the database's clock). `concurrency_key` and the
    rest: migration 0020 (`submitted_batch_id`: 0021); one priority level is worth
    `priority_aging_seconds` of waiting."""
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
        concurrency_key,
        concurrency_limit,
        concurrency_policy,
        priority,
        priority_aging_seconds,
        tags,
        submitted_batch_id,
    )
    return row
