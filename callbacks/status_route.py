"""The relay's route for status events: webhook deliveries first (the durable part), then Redis."""

from __future__ import annotations

from ackflow.events import OutboxEvent
from callbacks.fanout import WebhookFanout
from callbacks.publisher import StatusPublisher


class StatusEventRoute:
    """Fan out to webhooks, then publish live. Both are idempotent, so a re-sent row is harmless;
    if publishing fails the row stays and both run again (the deliveries already exist).

    The relay dispatches a claim's rows concurrently and each reaches the fan-out before any of
    them waits, so a claim's status events are fanned out in one statement, then published in one
    pipeline; if either fails, every event it held fails (and is re-sent)."""

    def __init__(self, fanout: WebhookFanout, publisher: StatusPublisher) -> None:
        self._fanout = fanout
        self._publisher = publisher

    async def __call__(self, event: OutboxEvent) -> None:
        await self._fanout.fan_out(event)
        await self._publisher.publish(event)
