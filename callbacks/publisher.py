"""Publishes each status event on Redis pub/sub for the gateways' live channels.

Redis is only the fast path: the record is Postgres (`request_events`), from which any client that
missed a message catches up. So a publish that fails is logged and dropped rather than holding
the outbox row back: Redis down costs latency, never an event.
"""

from __future__ import annotations

import logging

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ackflow.contracts import STATUS_TOPICS
from ackflow.events import OutboxEvent

log = logging.getLogger(__name__)


def events_channel(tenant_id: str) -> str:
    """The pub/sub channel of one tenant's request events."""
    return f"ackflow:events:{tenant_id}"


class StatusPublisher:
    """The relay's route for `request.*` status topics."""

    topics = STATUS_TOPICS

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def publish(self, event: OutboxEvent) -> None:
        """Publish `{event_id, topic, request_id, version, data}` on the tenant's channel, best effort."""
        message = msgspec.json.encode(
            {
                "event_id": event.event_id,
                "topic": event.topic,
                "request_id": str(event.request_id),
                "version": event.payload.get("version"),
                "data": event.payload,
            }
        )
        try:
            await self._redis.publish(events_channel(str(event.tenant_id)), message)
        except (RedisError, OSError) as exc:
            log.warning("could not publish %s to Redis (clients catch up from Postgres): %s", event.topic, exc)
