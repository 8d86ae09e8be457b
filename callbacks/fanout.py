"""Turns status events into webhook deliveries, one per subscribed endpoint (and callback_url).

The body is built from the event alone, so however often the relay re-sends the outbox row, a
delivery's `webhook-id` (`msg_<event id>`) always comes with the same bytes. The events the relay
dispatches together are fanned out together: one statement for all of them (a group commit).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg
import msgspec

from ackflow.contracts import OPT_IN_EVENT_TYPES
from ackflow.db.queries import sql
from ackflow.events import OutboxEvent
from ackflow.group_commit import GroupCommit


def webhook_body(event_type: str, timestamp: str, data: object) -> str:
    """The Standard Webhooks payload: `{type, timestamp, data}`."""
    return msgspec.json.encode({"type": event_type, "timestamp": timestamp, "data": data}).decode()


@dataclass(frozen=True)
class _Fanout:
    """One event's part of the `fan_out_webhooks` statement."""

    event_id: int
    topic: str
    tenant_id: uuid.UUID
    request_id: uuid.UUID
    body: str


class WebhookFanout:
    """The relay's webhook route for status events."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._writes: GroupCommit[_Fanout, None] = GroupCommit(self._fan_out_all)

    async def fan_out(self, event: OutboxEvent) -> None:
        """Create the event's deliveries (those that exist already stay as they are); raises if the
        statement that held them failed."""
        if event.event_id is None:
            return
        timestamp = str(event.payload.get("updated_at") or event.payload.get("created_at") or "")
        body = webhook_body(event.topic, timestamp, event.payload)
        await self._writes.submit(_Fanout(event.event_id, event.topic, event.tenant_id, event.request_id, body))

    async def _fan_out_all(self, events: list[_Fanout]) -> list[None]:
        await self._pool.execute(
            sql("fan_out_webhooks"),
            [event.event_id for event in events],
            [event.topic for event in events],
            [event.tenant_id for event in events],
            [event.request_id for event in events],
            [event.body for event in events],
            list(OPT_IN_EVENT_TYPES),
        )
        return [None] * len(events)
