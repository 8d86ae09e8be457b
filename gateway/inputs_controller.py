"""POST /v1/requests/{id}/input: deliver the outside input a waiting workflow kind waits for.

One statement (deliver_input) checks that the tenant's request waits for that input, keeps the
value, records a request.input_received event and asks the relay, through the outbox, to signal the
workflow: the gateway never calls Temporal, and an input accepted here reaches the workflow even if
Temporal is down for a while. With the API key any input the request waits for may be delivered;
with the capability URL of `links.input`, only the input it names.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from ackflow.db.queries import sql
from ackflow.errors import Conflict, Forbidden, InvalidInput, NotFound, PayloadTooLarge
from ackflow.logs import bind_log_context
from gateway.auth import current_tenant, granted_input, require_key_or_input_capability
from gateway.bodies import require_json_body
from gateway.json_depth import check_depth
from gateway.requests_controller import load_state
from gateway.schemas import DeliverInput, RequestState
from gateway.services import GatewayServices


class InputsController(Controller):
    path = "/v1/requests/{request_id:uuid}/input"
    guards = [require_key_or_input_capability]
    tags = ["requests"]

    @post("/", status_code=202, summary="Deliver the input a waiting request waits for", guards=[require_json_body])
    async def deliver(
        self,
        request: Request[Any, Any, Any],
        request_id: FromPath[uuid.UUID],
        data: JSONBody[DeliverInput],
        services: NamedDependency[GatewayServices],
        token: Annotated[str | None, QueryParameter(max_length=400)] = None,
    ) -> RequestState:
        """202 with the request's state: the input is kept and on its way to the workflow, which goes on with it.
        409 if the request does not wait for that input (now); 403 if the token is for another input."""
        tenant_id, settings = current_tenant(request), services.settings
        bind_log_context(request_id=request_id)
        allowed = granted_input(request)
        if allowed is not None and data.name != allowed:
            raise Forbidden(f"this link delivers the input {allowed!r} only, not {data.name!r}")
        size = len(msgspec.json.encode(data.value))
        if size > settings.max_input_bytes:
            raise PayloadTooLarge(f"the value is {size} bytes, over the {settings.max_input_bytes}-byte limit")
        check_depth(data.value, settings.max_json_depth, field="value")
        try:
            row = await services.pool.fetchrow(sql("deliver_input"), request_id, tenant_id, data.name, data.value)
        except asyncpg.UntranslatableCharacterError:
            raise InvalidInput(
                "the value contains a NUL character (\\u0000), which cannot be stored",
                errors=[{"field": "value", "in": "body", "message": "contains \\u0000"}],
            ) from None
        if row is None:
            raise await _why_not(services.pool, request_id, tenant_id, data.name)
        services.outbox_waker.wake()
        return await load_state(services.pool, request_id, tenant_id)


async def _why_not(pool: asyncpg.Pool, request_id: uuid.UUID, tenant_id: uuid.UUID, name: str) -> Exception:
    row = await pool.fetchrow(sql("request_waiting"), request_id, tenant_id)
    if row is None:
        return NotFound(f"request {request_id} does not exist")
    if row["waiting"] is None:
        return Conflict(f"request {request_id} is {row['status']} and waits for no input")
    return Conflict(f"request {request_id} waits for the input {row['waiting']['input']!r}, not {name!r}")
