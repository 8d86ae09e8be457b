"""Turns a status event into webhook deliveries, one per subscribed endpoint (and callback_url).

The body is built from the event alone, so however often the relay re-sends the outbox row, a
delivery's `webhook-id` (`msg_<event id>`) always comes with the same bytes.
"""

from __future__ import annotations

import asyncpg
import msgspec

from ackflow.db.queries import sql
from ackflow.events import OutboxEvent


def webhook_body(event_type: str, timestamp: str, data: object) -> str:
    """The Standard Webhooks payload: `{type, timestamp, data}`."""
    return msgspec.json.encode({"type": event_type, "timestamp": timestamp, "data": data}).decode()


class WebhookFanout:
    """The relay's webhook route for status events."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def fan_out(self, event: OutboxEvent) -> None:
        if event.event_id is None:
            return
        timestamp = str(event.payload.get("updated_at") or event.payload.get("created_at") or "")
        body = webhook_body(event.topic, timestamp, event.payload)
        await self._pool.execute(
            sql("fan_out_webhooks"), event.event_id, event.topic, event.tenant_id, event.request_id, body
        )
