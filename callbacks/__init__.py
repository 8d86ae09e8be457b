"""Callbacks: status events leave ackflow here, to the gateways' hubs over Redis and to partners'
webhook endpoints (signed per Standard Webhooks, retried durably on Temporal)."""

from callbacks.attempts import WebhookAttempts
from callbacks.dispatcher import WebhookDispatcher
from callbacks.fanout import WebhookFanout
from callbacks.limits import EndpointBusy, EndpointSlots
from callbacks.publisher import StatusPublisher
from callbacks.retries import TemporalRetryStarter
from callbacks.sender import WebhookSender
from callbacks.status_route import StatusEventRoute
from callbacks.transport import SplitTransport

__all__ = [
    "EndpointBusy",
    "EndpointSlots",
    "SplitTransport",
    "StatusEventRoute",
    "StatusPublisher",
    "TemporalRetryStarter",
    "WebhookAttempts",
    "WebhookDispatcher",
    "WebhookFanout",
    "WebhookSender",
]
