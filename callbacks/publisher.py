"""Publishes each status event on Redis pub/sub for the gateways' live channels.

Each event goes to its request's channel and its tenant's channel, in one round trip. Redis is only
the fast path: the record is Postgres (`request_events`), and while Redis is down the gateways'
streams read Postgres instead. A publish that fails is retried once at once (a pooled connection
that went stale when Redis restarted), then raised, so the relay keeps the outbox row and publishes
it when Redis is back: streams that trust Redis again still receive every event.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ackflow.contracts import STATUS_TOPICS
from ackflow.events import OutboxEvent
from ackflow.live import LiveEvent, encode_live_event, request_channel, tenant_channel

log = logging.getLogger(__name__)


class StatusPublisher:
    """The relay's route for `request.*` status topics."""

    topics = STATUS_TOPICS

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def publish(self, event: OutboxEvent) -> None:
        """Publish the event on its request's and its tenant's channel, best effort."""
        if event.event_id is None:
            log.warning("outbox row %s (%s) has no request event; nothing to publish", event.id, event.topic)
            return
        message = encode_live_event(
            LiveEvent(
                event_id=event.event_id,
                topic=event.topic,
                request_id=str(event.request_id),
                tenant_id=str(event.tenant_id),
                version=int(event.payload.get("version", 0)),
                data=event.payload,
            )
        )
        for attempt in (1, 2):
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.publish(request_channel(str(event.request_id)), message)
                    pipe.publish(tenant_channel(str(event.tenant_id)), message)
                    await pipe.execute()
                return
            except (RedisError, OSError) as exc:
                if attempt == 2:
                    raise
                log.info("publishing %s to Redis failed (%s); retrying once", event.topic, exc)
