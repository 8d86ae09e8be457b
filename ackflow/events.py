"""The outbox event, as the relay hands it to a route (Temporal dispatch, callbacks)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OutboxEvent:
    """One outbox row. `event_id` is the request_events id for status events (the SSE event id)."""

    id: int
    topic: str
    tenant_id: uuid.UUID
    request_id: uuid.UUID
    event_id: int | None
    payload: dict[str, Any]
    attempts: int


Route = Callable[[OutboxEvent], Awaitable[None]]
