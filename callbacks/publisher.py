"""Publishes each status event on Redis pub/sub for the gateways' live channels.

Each event goes to its request's channel and its tenant's channel; the events the relay dispatches
together are published together, in one pipeline (a group commit). Redis is only the fast path:
the record is Postgres (`request_events`), and while Redis is down the gateways' streams read
Postgres instead. A pipeline that fails is retried once at once (a pooled connection that went
stale when Redis restarted), then raised to every event it held, so the relay keeps their outbox
rows and publishes them when Redis is back: streams that trust Redis again still receive every event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ackflow.events import OutboxEvent
from ackflow.group_commit import GroupCommit
from ackflow.live import LiveEvent, encode_live_event, request_channel, tenant_channel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Message:
    """One event, encoded, and the two channels it goes to."""

    request_channel: str
    tenant_channel: str
    data: bytes


class StatusPublisher:
    """The relay's route for `request.*` status topics."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pipelines: GroupCommit[_Message, None] = GroupCommit(self._publish_all)

    async def publish(self, event: OutboxEvent) -> None:
        """Publish the event on its request's and its tenant's channel, best effort."""
        if event.event_id is None:
            log.warning("outbox row %s (%s) has no request event; nothing to publish", event.id, event.topic)
            return
        data = encode_live_event(
            LiveEvent(
                event_id=event.event_id,
                topic=event.topic,
                request_id=str(event.request_id),
                tenant_id=str(event.tenant_id),
                version=int(event.payload.get("version", 0)),
                data=event.payload,
            )
        )
        await self._pipelines.submit(
            _Message(request_channel(str(event.request_id)), tenant_channel(str(event.tenant_id)), data)
        )

    async def _publish_all(self, messages: list[_Message]) -> list[None]:
        for attempt in (1, 2):
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for message in messages:
                        pipe.publish(message.request_channel, message.data)
                        pipe.publish(message.tenant_channel, message.data)
                    await pipe.execute()
                break
            except (RedisError, OSError) as exc:
                if attempt == 2:
                    raise
                log.info("publishing %d events to Redis failed (%s); retrying once", len(messages), exc)
        return [None] * len(messages)
