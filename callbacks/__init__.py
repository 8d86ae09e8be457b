"""Callbacks: status events leave ackflow here, to the gateways' hubs over Redis (and, later, webhooks)."""

from callbacks.publisher import StatusPublisher, events_channel

__all__ = ["StatusPublisher", "events_channel"]
