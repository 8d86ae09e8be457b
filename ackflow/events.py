"""The outbox event, as the relay hands it to a route (Temporal dispatch, callbacks)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
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
    failing_since: datetime | None = None  # when its dispatch first failed
    claimed_until: datetime | None = None  # the lease of the relay that claimed it


Route = Callable[[OutboxEvent], Awaitable[None]]
