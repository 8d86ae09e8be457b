"""Callbacks: status events leave ackflow here, to the gateways' hubs over Redis (and, later, webhooks)."""

from callbacks.publisher import StatusPublisher

__all__ = ["StatusPublisher"]
