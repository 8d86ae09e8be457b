"""The HTTP edge's types: msgspec Structs, which also give the OpenAPI schema."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from ackflow.contracts import (
    EVENT_TYPE_DESCRIPTION,
    EVENT_TYPE_PATTERN,
    MAX_CONCURRENCY_LIMIT,
    MAX_DELAY_SECONDS,
    MAX_TAGS,
    TAG_PATTERN,
    HandlerOptions,
)
from ackflow.handlers import KIND_PATTERN
from ackflow.inputs import STORABLE_TEXT

Kind = Annotated[str, msgspec.Meta(pattern=KIND_PATTERN.pattern, description="A registered handler kind")]
EventType = Annotated[str, msgspec.Meta(pattern=EVENT_TYPE_PATTERN, description=EVENT_TYPE_DESCRIPTION)]
ConcurrencyKey = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=256, pattern=STORABLE_TEXT, description="Requests with the same key take turns"
    ),
]
Tag = Annotated[str, msgspec.Meta(pattern=TAG_PATTERN, description="1-64 of A-Z a-z 0-9 _ . : / = -")]
KeyPolicy = Literal["queue", "cancel_running", "replace_queued", "skip"]
WaitingFor = Literal["concurrency_key", "schedule", "admission", "worker"]


class CreateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /v1/requests. `callback_url` gets this request's status events as signed webhooks
    (signed with the tenant's signing secret), optionally only the `callback_events` listed.
    `run_at` (RFC 3339 with an offset) or `delay_seconds`, not both: start it no earlier than then,
    at most 30 days ahead; until then it is INIT with `scheduled_for`, and can be cancelled.
    `expires_at` or `ttl_seconds`, not both, after any `run_at`: not started by then, it ends CANCELLED
    with the error type Expired.
    `concurrency_key`: at most `concurrency_limit` (default: the kind's, else 1) of the tenant's requests
    with this key run at once; a new one finding it full waits in order (`concurrency_policy` queue),
    cancels the key's earlier requests (cancel_running), cancels those still waiting (replace_queued),
    or is refused with 409 (skip). `priority` 1 (first) .. 5 (default 3) orders the tenant's waiting
    requests, and waiting long enough outranks priority. `tags` filter the list and the event stream."""

    kind: Kind
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    callback_url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048, pattern=STORABLE_TEXT)] | None = None
    callback_events: Annotated[list[EventType], msgspec.Meta(min_length=1, max_length=10)] | None = None
    run_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    delay_seconds: Annotated[float, msgspec.Meta(gt=0, le=MAX_DELAY_SECONDS)] | None = None
    expires_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    ttl_seconds: Annotated[float, msgspec.Meta(gt=0, le=MAX_DELAY_SECONDS)] | None = None
    concurrency_key: ConcurrencyKey | None = None
    concurrency_limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_CONCURRENCY_LIMIT)] | None = None
    concurrency_policy: KeyPolicy = "queue"
    priority: Annotated[int, msgspec.Meta(ge=1, le=5)] | None = None
    tags: Annotated[list[Tag], msgspec.Meta(max_length=MAX_TAGS)] | None = None


MAX_BATCH_ITEMS = 1000


class BatchItem(CreateRequest, forbid_unknown_fields=True):
    """One item of POST /v1/requests/batch: the body of POST /v1/requests, and its own optional
    `idempotency_key` (as the Idempotency-Key header is for one request)."""

    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[ -~]+$")] | None = None


class CreateBatch(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /v1/requests/batch: up to 1,000 `items`, each a BatchItem (the body of POST
    /v1/requests, plus `idempotency_key`), validated one by one. `atomic`: all or nothing (one bad
    item refuses the batch); otherwise each bad item gets its own problem and the others are accepted."""

    items: Annotated[
        list[dict[str, Any]],
        msgspec.Meta(min_length=1, max_length=MAX_BATCH_ITEMS, description="Each a BatchItem"),
    ]
    atomic: bool = False


class ItemProblem(msgspec.Struct, omit_defaults=True):
    """Why one item of a batch was not accepted (RFC 9457 members)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
    running_requests: list[str] | None = None


class BatchLinks(msgspec.Struct):
    self: str


class Links(msgspec.Struct):
    self: str
    events: str


class RequestLinks(msgspec.Struct, omit_defaults=True):
    """Where to follow a request: its events (SSE, with the API key) and its webhook deliveries; while it
    waits for input, `input`: a capability URL that delivers that input alone (for a third party or an
    e-mail link; POST `{"name", "value"}` to it), in a GET of the request only."""

    self: str
    events: str
    deliveries: str
    input: str | None = None


InputName = Annotated[
    str, msgspec.Meta(pattern=KIND_PATTERN.pattern, description="The name a workflow kind waits for the input by")
]


class DeliverInput(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /v1/requests/{id}/input: the input `name` the request waits for, and its JSON `value`."""

    name: InputName
    value: Any = None


class AcceptedRequest(msgspec.Struct, omit_defaults=True):
    """The 202 answer: the request is committed and will be processed (a delayed start: not before
    `scheduled_for`)."""

    id: uuid.UUID
    kind: str
    status: str
    version: int
    created_at: datetime
    links: Links
    scheduled_for: datetime | None = None
    expires_at: datetime | None = None
    waiting_for: WaitingFor | None = None


class BatchItemAnswer(msgspec.Struct, omit_defaults=True):
    """One item's answer, in the items' order: the request it made (`replayed`: one its idempotency_key
    made before), or its problem."""

    index: int
    request: AcceptedRequest | None = None
    problem: ItemProblem | None = None
    replayed: bool = False


class AcceptedBatch(msgspec.Struct):
    """The 202 answer to a batch: every accepted item is committed, in one transaction. `accepted`
    counts the requests it made; `replayed` the items answered with a request an earlier idempotency
    key made (not part of this batch's counts)."""

    id: uuid.UUID
    size: int
    accepted: int
    replayed: int
    items: list[BatchItemAnswer]
    links: BatchLinks


class BatchState(msgspec.Struct):
    """A submitted batch: its requests counted by status (those since pruned are not counted)."""

    id: uuid.UUID
    size: int
    accepted: int
    created_at: datetime
    counts: dict[str, int]
    links: BatchLinks


class Progress(msgspec.Struct, omit_defaults=True):
    """The latest progress report of a running request (ackflow/progress_reports.py): the fraction done (0..1),
    a message, a partial result, when it was reported."""

    at: datetime
    fraction: float | None = None
    message: str | None = None
    partial: Any = None


class Waiting(msgspec.Struct):
    """What a running request waits for: the outside input named `input` (POST `{"name": input, "value": ...}`
    to /v1/requests/{id}/input), since when."""

    input: str
    since: datetime


class RequestState(msgspec.Struct):
    """A request as GET returns it."""

    id: uuid.UUID
    kind: str
    status: str
    version: int
    payload: dict[str, Any]
    result: Any
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    workflow_id: str | None = None  # the Temporal workflow it runs in (a batch's), once admitted
    scheduled_for: datetime | None = None  # a delayed start: not started before then
    expires_at: datetime | None = None  # not started by then, it ends CANCELLED (Expired)
    # Why it has not started (INIT only): its key is full, its start is later, admission, a worker.
    waiting_for: WaitingFor | None = None
    concurrency_key: str | None = None
    priority: int | None = None
    tags: list[str] | None = None
    progress: Progress | None = None
    waiting: Waiting | None = None
    links: RequestLinks | None = None


class RegisteredKind(msgspec.Struct):
    """A kind a worker handles: its task queue and how its handler is scheduled (None until a worker
    registered its options)."""

    kind: str
    task_queue: str
    registered_at: datetime
    options: HandlerOptions | None


class RegisteredKinds(msgspec.Struct):
    items: list[RegisteredKind]


class RequestPage(msgspec.Struct):
    """One page of requests, newest first; pass `next_cursor` as `cursor` for the next page."""

    items: list[RequestState]
    next_cursor: str | None


class Health(msgspec.Struct):
    status: str
    checks: dict[str, str]
