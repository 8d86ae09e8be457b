"""The span a handler runs in: `ackflow.handler <kind>`, in its request's trace (ackflow/tracing.py).

Its parent is the request's stored trace context; when Temporal's RunActivity span is in another
trace (a batch of several requests starts one workflow, which cannot be in every request's trace),
the handler's span links to it instead. The outcome is the span's status and `ackflow.outcome`:
DONE, FAILED, `retry` (a failed attempt its kind retries) or `dropped` (the request ended first).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import StatusCode

from ackflow.contracts import DONE
from ackflow.tracing import KIND, OUTCOME, REQUEST_ID, TENANT, request_span


@contextlib.contextmanager
def handler_span(request_id: str, kind: str, trace_context: str | None, *, tenant_id: object = None) -> Iterator[None]:
    """The handler's span, current for the block (an exception escaping it marks it an error)."""
    attributes = {REQUEST_ID: request_id, KIND: kind}
    if tenant_id is not None:
        attributes[TENANT] = str(tenant_id)
    with request_span(f"ackflow.handler {kind}", trace_context, attributes=attributes):
        yield


def record_outcome(outcome: str, error: dict[str, Any] | None = None) -> None:
    """Set the current handler span's outcome: OK for DONE, an error with the failure's type and message."""
    span = trace.get_current_span()
    span.set_attribute(OUTCOME, outcome)
    if outcome == DONE:
        span.set_status(StatusCode.OK)
    elif error is not None:
        span.set_status(StatusCode.ERROR, f"{error.get('type')}: {error.get('message')}")
