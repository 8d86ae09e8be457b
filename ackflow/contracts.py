"""Types and names that cross process boundaries: Temporal inputs and outputs, topics, statuses.

Workflows import this module, so it must stay deterministic and free of I/O. Every Temporal
workflow and activity takes one dataclass and returns one, so fields can be added later without
breaking recorded histories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Temporal names. Started by name from the relay, so the relay need not import workflows/.
PROCESS_REQUEST_WORKFLOW = "ProcessRequestWorkflow"
DEFAULT_TASK_QUEUE = "ackflow"
SEARCH_ATTRIBUTE_TENANT = "AckflowTenant"
SEARCH_ATTRIBUTE_KIND = "AckflowKind"

# Request statuses. Status only moves forward: INIT -> PROCESSING -> one terminal status.
INIT = "INIT"
PROCESSING = "PROCESSING"
DONE = "DONE"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TERMINAL_STATUSES = frozenset({DONE, FAILED, CANCELLED})
ALL_STATUSES = (INIT, PROCESSING, DONE, FAILED, CANCELLED)

# Outbox topics.
TOPIC_ACCEPTED = "request.accepted"
TOPIC_CANCEL_REQUESTED = "request.cancel_requested"
TOPIC_FOR_STATUS = {
    INIT: TOPIC_ACCEPTED,
    PROCESSING: "request.processing",
    DONE: "request.done",
    FAILED: "request.failed",
    CANCELLED: "request.cancelled",
}
STATUS_TOPICS = frozenset(topic for status, topic in TOPIC_FOR_STATUS.items() if status != INIT)


def workflow_id_for(request_id: str) -> str:
    """The one workflow id a request may ever run under, so a re-sent outbox row cannot start a second run."""
    return f"request-{request_id}"


@dataclass
class HandlerOptions:
    """How the handler activity is scheduled; recorded in history so replays see the same values."""

    start_to_close_seconds: float = 300.0
    heartbeat_seconds: float | None = None
    max_attempts: int = 5
    initial_retry_seconds: float = 1.0
    max_retry_seconds: float = 60.0


@dataclass
class ProcessRequestInput:
    """What the relay gives ProcessRequestWorkflow: enough to find the request, nothing that can go stale.

    `handler`: the kind's options as registered when the request was accepted. None for requests
    accepted before kinds registered their options (their workflow asks a worker for them).
    """

    request_id: str
    tenant_id: str
    kind: str
    handler: HandlerOptions | None = None


@dataclass
class StartProcessingInput:
    request_id: str
    kind: str


@dataclass
class StartProcessingOutput:
    """`proceed` is False when the request is already terminal (cancelled before it started)."""

    proceed: bool
    handler: HandlerOptions = field(default_factory=HandlerOptions)


@dataclass
class RunHandlerInput:
    request_id: str
    kind: str


@dataclass
class RunHandlerOutput:
    """`status`: the request's status after the attempt: DONE, or the end that kept the handler from running."""

    result: Any
    status: str | None = None


@dataclass
class FinishInput:
    """A terminal transition: DONE with a result, FAILED with an error, or CANCELLED."""

    request_id: str
    status: str
    result: Any = None
    error: dict[str, Any] | None = None


# Webhooks ------------------------------------------------------------------------------------

WEBHOOK_RETRY_WORKFLOW = "WebhookRetryWorkflow"

# Svix's schedule: the wait before attempts 2..8, each counted from the previous attempt (27.6 h in all).
WEBHOOK_RETRY_SCHEDULE_SECONDS = (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
WEBHOOK_RETRY_JITTER = 0.2
WEBHOOK_RETRY_AFTER_BOUNDS_SECONDS = (1, 24 * 3600)


@dataclass
class WebhookRetryInput:
    """A delivery whose first `attempts_done` attempts failed; `retry_after` is the receiver's last hint."""

    delivery_id: str
    attempts_done: int
    retry_after: float | None = None
    schedule_seconds: list[float] | None = None  # None: WEBHOOK_RETRY_SCHEDULE_SECONDS


@dataclass
class WebhookAttemptInput:
    """One scheduled attempt; `now` is the workflow's clock (ISO 8601), so health checks follow it."""

    delivery_id: str
    now: str


@dataclass
class WebhookAttemptOutput:
    state: str
    attempt: int
    retry_after: float | None = None
