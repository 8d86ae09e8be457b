"""Types and names that cross process boundaries: Temporal inputs and outputs, topics, statuses,
and the HTTP API's terms that its client relies on.

Workflows import this module, so it must stay deterministic and free of I/O. Every Temporal
workflow and activity takes one dataclass and returns one, so fields can be added later without
breaking recorded histories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# Temporal names. Started by name from the relay, so the relay need not import workflows/.
PROCESS_REQUEST_WORKFLOW = "ProcessRequestWorkflow"  # one request; started by relays of before batches
PROCESS_BATCH_WORKFLOW = "ProcessBatchWorkflow"
CANCEL_REQUEST_SIGNAL = "cancel_request"  # to a batch: cancel one of its requests
DEFAULT_TASK_QUEUE = "ackflow"
SEARCH_ATTRIBUTE_TENANT = "AckflowTenant"
SEARCH_ATTRIBUTE_KIND = "AckflowKind"
SEARCH_ATTRIBUTE_REQUEST_IDS = "AckflowRequestIds"  # every request of a batch, to find its workflow by request id
SEARCH_ATTRIBUTE_TENANTS = "AckflowTenants"
SEARCH_ATTRIBUTE_KINDS = "AckflowKinds"
SEARCH_ATTRIBUTE_TYPES = {  # as `temporal server start-dev --search-attribute NAME=TYPE` spells them
    SEARCH_ATTRIBUTE_TENANT: "Keyword",
    SEARCH_ATTRIBUTE_KIND: "Keyword",
    SEARCH_ATTRIBUTE_REQUEST_IDS: "KeywordList",
    SEARCH_ATTRIBUTE_TENANTS: "KeywordList",
    SEARCH_ATTRIBUTE_KINDS: "KeywordList",
}

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
TOPIC_BATCH = "request.batch"  # accepted requests admitted together, to start as one workflow (migration 0013)
TOPIC_FOR_STATUS = {
    INIT: TOPIC_ACCEPTED,
    PROCESSING: "request.processing",
    DONE: "request.done",
    FAILED: "request.failed",
    CANCELLED: "request.cancelled",
}
_STATUS_TOPICS = [topic for status, topic in TOPIC_FOR_STATUS.items() if status != INIT]  # in order
STATUS_TOPICS = frozenset(_STATUS_TOPICS)
TOPIC_PROGRESS = "request.progress"  # a progress report of a PROCESSING request (ackflow/progress_reports.py)
TOPIC_WAITING = "request.waiting"  # a workflow kind waits for outside input (ackflow/workflow_kinds.py)
TOPIC_INPUT_RECEIVED = "request.input_received"  # that input was accepted: the request runs on
TOPIC_INPUT = "request.input"  # outbox only: relay an accepted input to the workflow waiting for it
TOPIC_SUPERSEDE = "request.supersede"  # outbox only: cancel what a new request replaces (its key's policy)
# The events of a request's history that every channel carries (request_events.topic).
EVENT_TOPICS = STATUS_TOPICS | {TOPIC_PROGRESS, TOPIC_WAITING, TOPIC_INPUT_RECEIVED}
# Event types a webhook gets only if it names them: `request.*` means every other one.
OPT_IN_EVENT_TYPES = (TOPIC_PROGRESS,)
# What a webhook endpoint's event_types and a request's callback_events may name: an event topic, or
# `request.*` for every one but the opt-in ones (fan_out_webhooks matches the wildcard).
_EVENT_TYPES = [*_STATUS_TOPICS, TOPIC_WAITING, TOPIC_INPUT_RECEIVED, *OPT_IN_EVENT_TYPES]
EVENT_TYPE_PATTERN = r"^request\.(\*|" + "|".join(t.removeprefix("request.") for t in _EVENT_TYPES) + ")$"
EVENT_TYPE_DESCRIPTION = ", ".join(_EVENT_TYPES) + ", or request.* (every one but request.progress)"


# The HTTP API, as the gateway serves it and ackflow.client relies on it.
MAX_WAIT_SECONDS = 60  # the longest long poll (GET /v1/requests/{id}?wait=, Prefer: wait=)
MAX_DELAY_SECONDS = 30 * 24 * 3600  # the furthest ahead a delayed start or an expiry may be (POST /v1/requests)

# Concurrency keys (migration 0020): what a new request does when its key already has `limit` holders.
KEY_QUEUE = "queue"  # wait in order for a slot
KEY_CANCEL_RUNNING = "cancel_running"  # cancel the key's earlier requests, running or waiting; run next
# The others (gateway/schemas.py KeyPolicy): replace_queued cancels the key's earlier requests still
# waiting (a debounce); skip is not accepted, a 409 naming the requests that hold the key.
MAX_CONCURRENCY_LIMIT = 10_000
MAX_TAGS = 10
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/=-]{0,63}$"
PROBLEM_MEDIA_TYPE = "application/problem+json"  # every error answer (RFC 9457)


WORK_WORKFLOW_PREFIX = "work-"
INPUT_SIGNAL = "ackflow_input"  # to a workflow kind's run: {"name": ..., "value": ...}


def work_workflow_id(request_id: str) -> str:
    """The workflow id of a workflow kind's run for the request (a child of its batch): one run per request."""
    return WORK_WORKFLOW_PREFIX + request_id


def request_of_work(workflow_id: str) -> str | None:
    """The request a workflow kind's run is for, from its workflow id; None for any other workflow."""
    return workflow_id.removeprefix(WORK_WORKFLOW_PREFIX) if workflow_id.startswith(WORK_WORKFLOW_PREFIX) else None


def workflow_id_for(request_id: str) -> str:
    """The workflow id of a request started alone, before batches: a re-sent outbox row cannot start a second run.
    (A batch's workflow id is derived from its members when the claim forms it, migration 0013.)"""
    return f"request-{request_id}"


@dataclass
class HandlerOptions:
    """How the handler activity is scheduled; recorded in history so replays see the same values."""

    start_to_close_seconds: float = 300.0
    heartbeat_seconds: float | None = None
    max_attempts: int = 5
    initial_retry_seconds: float = 1.0
    max_retry_seconds: float = 60.0
    # A request of the kind with a concurrency_key and no concurrency_limit of its own: this many of the
    # key's requests run at once (None: one). Read at accept, never by the workflow.
    concurrency_limit: int | None = None
    # A workflow kind: the Temporal workflow type that does the work, as a child of the request's batch
    # (start_to_close_seconds bounds its whole run). None: the kind's handler function.
    workflow: str | None = None


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
class ProcessBatchInput:
    """What the relay gives ProcessBatchWorkflow: its requests, each as it would start alone."""

    requests: list[ProcessRequestInput]


@dataclass
class RunBatchInput:
    """The requests a batch runs together in one activity (first attempts)."""

    requests: list[ProcessRequestInput]


@dataclass
class BatchRetry:
    """A request whose first attempt in the batch failed and may be retried; `error` is that failure."""

    request_id: str
    error: dict[str, Any]


@dataclass
class RunBatchOutput:
    """What became of a batch's first attempts: each request ended, but those in `retries` (to retry
    alone), `running` (handlers still running on the worker whose task queue is `handover_queue`,
    to be awaited there) and `lost` (to run alone: the worker that ran them is gone)."""

    retries: list[BatchRetry] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    handover_queue: str | None = None
    lost: list[str] = field(default_factory=list)


@dataclass
class AwaitRequestsInput:
    """Handlers a batch's local activity left running on this worker: wait for their outcomes."""

    request_ids: list[str]


@dataclass
class FinishManyInput:
    """Terminal transitions of several requests at once (a cancelled batch: CANCELLED for all)."""

    finishes: list[FinishInput]


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
class StartWorkInput:
    request_id: str


@dataclass
class StartWorkOutput:
    """`proceed` False: the request already ended (cancelled before it started). `payload`: the
    workflow kind's argument."""

    proceed: bool
    payload: Any = None


@dataclass
class RecordWorkInput:
    """A workflow kind's run returned `result`: the request is DONE with it."""

    request_id: str
    result: Any = None


@dataclass
class MarkWaitingInput:
    """A workflow kind's run waits for the outside input `input` (None: it has it, or stopped waiting).
    `wait`: which of the run's waits this is (1, 2, ...; 0 from runs of before it was sent), so that
    a mark run again after that wait's input arrived (a worker died in between) changes nothing."""

    request_id: str
    input: str | None
    wait: int = 0


@dataclass
class RunHandlerInput:
    request_id: str
    kind: str


@dataclass
class RunHandlerOutput:
    """`status`: the request's status after the attempt: DONE, or the end that kept the handler from running.

    (Outputs recorded before carry a `result` too, always null: the result is recorded in Postgres,
    never sent through history. Temporal's converter ignores the extra key when they replay.)"""

    status: str | None = None


@dataclass
class FinishInput:
    """A terminal transition the workflow records: FAILED with an error, or CANCELLED (DONE is
    recorded by the handler's activity, with its result). Inputs recorded before carry a `result`
    too, always null."""

    request_id: str
    status: str
    error: dict[str, Any] | None = None


# Webhooks ------------------------------------------------------------------------------------

WEBHOOK_RETRY_WORKFLOW = "WebhookRetryWorkflow"
WEBHOOK_ATTEMPT_NOW_SIGNAL = "attempt_now"  # a resend: the retry workflow attempts at once


class DeliveryState(StrEnum):
    """A webhook delivery's state, as stored in `webhook_deliveries.state` (the machine is drawn in
    migration 0010): a dispatcher owns pending, delivering, and the hand-off of handoff and
    resending; the retry workflow owns what is on its schedule. The SQL spells these values too:
    tests/unit/test_sql_names.py checks that it spells only these."""

    PENDING = "pending"
    DELIVERING = "delivering"
    HANDOFF = "handoff"  # a failed attempt is recorded; its retry workflow is still to be started
    RESENDING = "resending"  # a resend of a delivery on its schedule: its workflow is to be signalled
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


ON_RETRY_SCHEDULE = (DeliveryState.HANDOFF, DeliveryState.RESENDING, DeliveryState.RETRYING)

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
    state: DeliveryState
    attempt: int
    retry_after: float | None = None
