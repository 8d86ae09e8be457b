"""The span of one webhook attempt: `ackflow.webhook.attempt`, in its request's trace (ackflow/tracing.py).

A CLIENT span whose parent is the request's stored trace context, whoever attempts: the dispatcher
(first attempts, resends) or the retry workflow's activity (attempts 2 to 8; its RunActivity span,
in the trace of the hand-off, is linked). The partner receives its `traceparent`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry.trace import Span, SpanKind, StatusCode

from ackflow.contracts import DeliveryState
from ackflow.tracing import OUTCOME, request_span

DELIVERY_ID = "ackflow.webhook.delivery_id"
ENDPOINT_ID = "ackflow.webhook.endpoint_id"
ATTEMPT = "ackflow.webhook.attempt_number"
STATUS_CODE = "http.response.status_code"  # OpenTelemetry's semantic convention


@contextlib.contextmanager
def attempt_span(row: Mapping[str, Any]) -> Iterator[Span]:
    """The attempt's span for a delivery row (claim_webhook_deliveries or delivery_for_attempt)."""
    attributes = {DELIVERY_ID: str(row["id"]), ATTEMPT: row["attempts"] + 1}
    if row["endpoint_id"] is not None:
        attributes[ENDPOINT_ID] = str(row["endpoint_id"])
    with request_span(
        "ackflow.webhook.attempt", row.get("trace_context"), kind=SpanKind.CLIENT, attributes=attributes
    ) as span:
        yield span


def record_attempt_outcome(span: Span, status_code: int | None, state: DeliveryState, error: str | None) -> None:
    """The partner's answer and the delivery's state after the attempt; an error status unless it succeeded."""
    if status_code is not None:
        span.set_attribute(STATUS_CODE, status_code)
    span.set_attribute(OUTCOME, str(state))
    if state == DeliveryState.SUCCEEDED:
        span.set_status(StatusCode.OK)
    else:
        span.set_status(StatusCode.ERROR, error or str(state))
