"""Which of a tenant's events its stream (GET /v1/events) carries: by kind, status and tag."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EventFilter:
    """Each field None matches every event; the same test runs on live events and, in SQL, on replays
    (tenant_events_page), both on the request's state the event carries."""

    kind: str | None = None
    status: str | None = None
    tag: str | None = None

    def matches(self, data: dict[str, Any]) -> bool:
        tags = data.get("tags")
        return (
            (self.kind is None or data.get("kind") == self.kind)
            and (self.status is None or data.get("status") == self.status)
            and (self.tag is None or (isinstance(tags, list) and self.tag in tags))
        )


EVERY_EVENT = EventFilter()
