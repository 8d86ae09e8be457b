"""The relay's route for status events: webhook deliveries first (the durable part), then Redis."""

from __future__ import annotations

from ackflow.events import OutboxEvent
from callbacks.fanout import WebhookFanout
from callbacks.publisher import StatusPublisher


class StatusEventRoute:
    """Fan out to webhooks, then publish live. Both are idempotent, so a re-sent row is harmless;
    if publishing fails the row stays and both run again (the deliveries already exist)."""

    def __init__(self, fanout: WebhookFanout, publisher: StatusPublisher) -> None:
        self._fanout = fanout
        self._publisher = publisher

    async def __call__(self, event: OutboxEvent) -> None:
        await self._fanout.fan_out(event)
        await self._publisher.publish(event)
