"""Counting every answer to POST /v1/requests, refusals included, and timing it.

A middleware on the accept route alone: Litestar puts its exception handling between a route's
middleware and its handler, so the status seen here is the one the client gets, whether the handler
answered 202 or a guard, the body limit, validation or a domain error refused it with a problem.
Labels stay bounded: the tenant is the name of the tenant the API-key guard authenticated
("unauthenticated" before that), and the kind is the body's kind only if this gateway has accepted
a request of that kind (kinds are registered by workers, so few), else "unknown". The cost per
request is one counter increment and one histogram observation, no I/O.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ackflow.metrics import ACCEPT_DURATION, ACCEPTS, UNAUTHENTICATED, UNKNOWN_KIND

KIND_STATE = "accept_kind"  # where the accept handler leaves the body's kind, in the connection's state
# Set when the answer waited for the request's outcome (`Prefer: wait=N`): that time is the work's, not
# the accept's, so the latency histogram leaves it out (the counter still counts the answer).
WAITED_STATE = "accept_waited"
_accepted_kinds: set[str] = set()  # kinds this gateway accepted: bounded by the kinds workers register


def note_kind(state: Any, kind: str) -> None:
    """Called by the accept handler once the body is decoded: the kind, for this answer's label."""
    state[KIND_STATE] = kind


def kind_label(kind: str | None, status: int) -> str:
    """The kind as a label: a kind once accepted, else "unknown" (never a string a client made up)."""
    if kind is None:
        return UNKNOWN_KIND
    if status == 202:
        _accepted_kinds.add(kind)
        return kind
    return kind if kind in _accepted_kinds else UNKNOWN_KIND


class AcceptMetrics(ASGIMiddleware):
    """ackflow_accepts_total and ackflow_accept_duration_seconds for the route it is given."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = time.perf_counter()
        status = 500  # an exception that escaped everything: the server answers 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, send_counted)
        finally:
            state: dict[str, Any] = scope.get("state") or {}
            if not state.get(WAITED_STATE):
                ACCEPT_DURATION.observe(time.perf_counter() - started)
            # Positional labels (tenant, kind, status): a third cheaper than keywords, on the hottest path.
            ACCEPTS.labels(
                _tenant_label(scope, state.get("tenant_id")), kind_label(state.get(KIND_STATE), status), str(status)
            ).inc()


def _tenant_label(scope: Scope, tenant_id: uuid.UUID | None) -> str:
    if tenant_id is None:
        return UNAUTHENTICATED
    name = scope["app"].state.authenticator.tenant_name(tenant_id)
    return name if isinstance(name, str) else UNAUTHENTICATED
