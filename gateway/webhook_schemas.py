"""The HTTP edge's types for webhook endpoints and deliveries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec

from ackflow.contracts import DeliveryState
from ackflow.inputs import STORABLE_TEXT
from gateway.schemas import EventType

Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048, pattern=STORABLE_TEXT)]
Description = Annotated[str, msgspec.Meta(max_length=500, pattern=STORABLE_TEXT)]
Concurrency = Annotated[int, msgspec.Meta(ge=1, le=1000)]
RatePerSecond = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
EventTypes = Annotated[list[EventType], msgspec.Meta(min_length=1, max_length=10)]


class CreateEndpoint(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /v1/webhooks."""

    url: Url
    event_types: EventTypes
    description: Description = ""
    max_concurrency: Concurrency = 10
    rate_limit_per_second: RatePerSecond | None = None


class UpdateEndpoint(msgspec.Struct, forbid_unknown_fields=True):
    """Body of PATCH /v1/webhooks/{id}: fields left out stay as they are; `enabled: true` re-enables."""

    url: Url | msgspec.UnsetType = msgspec.UNSET
    event_types: EventTypes | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    max_concurrency: Concurrency | msgspec.UnsetType = msgspec.UNSET
    rate_limit_per_second: RatePerSecond | msgspec.UnsetType | None = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET


class Endpoint(msgspec.Struct):
    id: uuid.UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    max_concurrency: int
    rate_limit_per_second: int | None
    created_at: datetime
    updated_at: datetime


class CreatedEndpoint(Endpoint):
    """The endpoint with its signing secret, shown this once."""

    secret: str = ""


class EndpointPage(msgspec.Struct):
    items: list[Endpoint]
    next_cursor: str | None


class SigningSecret(msgspec.Struct):
    secret: str


class Delivery(msgspec.Struct):
    id: uuid.UUID
    endpoint_id: uuid.UUID | None
    request_id: uuid.UUID | None
    event_id: int | None
    webhook_id: str
    event_type: str
    url: str
    state: DeliveryState
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class Attempt(msgspec.Struct):
    attempt: int
    trigger: str
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    response_body: str | None
    error: str | None


class DeliveryDetail(Delivery):
    attempt_log: list[Attempt] = msgspec.field(default_factory=list)


class DeliveryPage(msgspec.Struct):
    items: list[Delivery]
    next_cursor: str | None


class Recover(msgspec.Struct, forbid_unknown_fields=True):
    """Body of POST /v1/webhooks/{id}/recover: resend every failed delivery created since then."""

    since: datetime


class Requeued(msgspec.Struct):
    requeued: int


def delivery_from_row(row: Any) -> dict[str, Any]:
    values = dict(row)
    values["webhook_id"] = values.pop("message_id")
    return values
