"""/v1/requests: accept, read, list and cancel requests. Every query is scoped to the caller's tenant."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from ackflow.contracts import (
    ALL_STATUSES,
    INIT,
    MAX_TAGS,
    MAX_WAIT_SECONDS,
    TAG_PATTERN,
    TERMINAL_STATUSES,
)
from ackflow.db.queries import sql
from ackflow.db.transitions import cancel_unstarted
from ackflow.errors import Conflict, InvalidInput, NotFound, Unauthorized
from ackflow.handlers import KIND_PATTERN
from ackflow.inputs import STORABLE_TEXT
from ackflow.logs import bind_log_context
from ackflow.netguard import check_target
from ackflow.settings import Settings
from ackflow.tracing import link_current_span_to
from gateway.accept_metrics import WAITED_STATE, AcceptMetrics, note_kind
from gateway.accepts import accepted_body, check_controls, insert_request
from gateway.auth import current_key, current_tenant, require_api_key
from gateway.bodies import require_json_body
from gateway.cursors import MAX_PAGE_SIZE, decode_cursor, encode_cursor
from gateway.idempotency import claim_key, parse_key
from gateway.schemas import (
    CreateRequest,
    Progress,
    RequestLinks,
    RequestPage,
    RequestState,
    Waiting,
)
from gateway.services import GatewayServices
from gateway.webhook_schemas import Delivery, DeliveryPage, delivery_from_row

_TAG = re.compile(TAG_PATTERN)
_RESPOND_ASYNC = re.compile(r"(?:^|[,;\s])respond-async(?:$|[,;\s])", re.IGNORECASE | re.ASCII)
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE | re.ASCII)


class RequestsController(Controller):
    """Requests of the authenticated tenant."""

    path = "/v1/requests"
    guards = [require_api_key]
    tags = ["requests"]

    @post(
        "/",
        status_code=202,
        summary="Accept a request",
        # `Prefer: wait=N`: the final state when the request ended in time.
        responses={200: ResponseSpec(RequestState, description="The request ended within `Prefer: wait=N`")},
        guards=[require_json_body],
        middleware=[AcceptMetrics()],
    )
    async def accept(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[CreateRequest],
        services: NamedDependency[GatewayServices],
    ) -> Response[Any]:
        """Commit the request (status INIT) with its outbox event in one statement, and answer at once.

        `links.events` is a capability URL: it opens this request's event stream without the API key
        (for browsers' EventSource), and nothing else. With an `Idempotency-Key` header, a retry of
        the same request gets the original answer and creates nothing. With `Prefer: wait=N` (RFC
        7240), a request that ends within N seconds is answered `200` with its final state; else the
        usual `202`. `Prefer: respond-async` always answers `202` at once.
        """
        tenant_id, settings = current_tenant(request), services.settings
        note_kind(request.state, data.kind)
        check_controls(data, settings.max_json_depth)
        await services.rate_limiter.check(tenant_id)
        await services.queue_depth.check(tenant_id)
        if data.callback_url is not None:
            await check_target(data.callback_url, allow_private=settings.webhook_allow_private, field="callback_url")
        key = parse_key(request.headers.get("idempotency-key"), request.method, request.url.path, await request.body())
        if key is None:
            row = await insert_request(services.pool, tenant_id, data, settings)
            link_current_span_to(row["id"], None)  # the POST's span names the request it made
            services.outbox_waker.wake()
            return await _answer_accepted(services, request, accepted_body(row, request, services.capability_tokens))
        async with claim_key(services.pool, tenant_id, key, ttl_seconds=settings.idempotency_ttl_seconds) as claim:
            replay = claim.replay
            if replay is None:
                row = await insert_request(claim.connection, tenant_id, data, settings)
                link_current_span_to(row["id"], None)
                body = accepted_body(row, request, services.capability_tokens)
                await claim.remember(row["id"], 202, body)
        if replay is not None:  # answered as the original was, and waited for as a new one would be
            response = await _answer_accepted(services, request, replay.body)
            response.headers["Idempotent-Replayed"] = "true"
            return response
        services.outbox_waker.wake()
        return await _answer_accepted(services, request, body)

    @get("/{request_id:uuid}", summary="Get a request's status and result (long poll with ?wait=N)")
    async def read(
        self,
        request: Request[Any, Any, Any],
        request_id: FromPath[uuid.UUID],
        services: NamedDependency[GatewayServices],
        wait: Annotated[float | None, QueryParameter(ge=0, le=MAX_WAIT_SECONDS)] = None,
        progress: Annotated[
            bool, QueryParameter(description="with wait: answer on the next progress report too, not only the end")
        ] = False,
    ) -> Response[RequestState]:
        """With `?wait=N` (or `Prefer: wait=N`), answer as soon as the request ends (with `progress=true`,
        as soon as it changes), or after N seconds."""
        tenant_id = current_tenant(request)
        bind_log_context(request_id=request_id)
        headers: dict[str, str] = {}
        preferred = _preferred_wait(request.headers.get("prefer"))
        if wait is None and preferred is not None:
            wait = preferred
            headers["Preference-Applied"] = f"wait={preferred:g}"
        state = await load_state(services.pool, request_id, tenant_id)
        if wait and state.status not in TERMINAL_STATUSES:
            await _wait_until_terminal(services, request, request_id, wait, state.version if progress else None)
            state = await load_state(services.pool, request_id, tenant_id, linked=True)
        if state.status not in TERMINAL_STATUSES:
            headers["Retry-After"] = str(services.settings.retry_after_seconds)
        if state.waiting is not None and state.links is not None:  # a link to hand to whoever decides
            tokens = services.capability_tokens
            token = tokens.issue_input(request_id, tenant_id, current_key(request), state.waiting.input)
            state.links.input = f"/v1/requests/{request_id}/input?token={token}"
        return Response(state, headers=headers)

    @get("/", summary="List requests, newest first")
    async def list_requests(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[GatewayServices],
        status: FromQuery[str | None] = None,
        kind: Annotated[str | None, QueryParameter(pattern=KIND_PATTERN.pattern)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE_SIZE)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=64)] = None,
        tag: Annotated[
            list[str] | None,
            QueryParameter(description="only requests carrying this tag (repeat: all of them)", max_items=MAX_TAGS),
        ] = None,
        concurrency_key: Annotated[
            str | None, QueryParameter(min_length=1, max_length=256, pattern=STORABLE_TEXT)
        ] = None,
    ) -> RequestPage:
        tenant_id = current_tenant(request)
        for each in tag or ():  # each item's pattern: Litestar checks only the list's own constraints
            if not _TAG.match(each):
                raise InvalidInput(
                    "a tag is 1-64 of A-Z a-z 0-9 _ . : / = - (starting with a letter or digit)",
                    status_code=400,
                    errors=[{"field": "tag", "in": "query", "message": "not a valid tag"}],
                )
        if status is not None and status not in ALL_STATUSES:
            raise InvalidInput(
                f"status must be one of {', '.join(ALL_STATUSES)}",
                status_code=400,
                errors=[{"field": "status", "in": "query", "message": "unknown status"}],
            )
        after = decode_cursor(cursor) if cursor else None
        rows = await services.pool.fetch(
            sql("list_requests"), tenant_id, status, after, kind, limit + 1, tag, concurrency_key
        )
        items = [_state(row) for row in rows[:limit]]
        next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
        return RequestPage(items=items, next_cursor=next_cursor)

    @get("/{request_id:uuid}/deliveries", summary="A request's webhook deliveries, newest first")
    async def deliveries(
        self,
        request: Request[Any, Any, Any],
        request_id: FromPath[uuid.UUID],
        services: NamedDependency[GatewayServices],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE_SIZE)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=64)] = None,
    ) -> DeliveryPage:
        """Every delivery of this request, to the tenant's endpoints and to its `callback_url`; the attempts
        of one are at `/v1/deliveries/{id}`."""
        tenant_id = current_tenant(request)
        bind_log_context(request_id=request_id)
        if await services.pool.fetchrow(sql("get_request"), request_id, tenant_id) is None:
            raise NotFound(f"request {request_id} does not exist")
        after = decode_cursor(cursor) if cursor else None
        rows = await services.pool.fetch(sql("list_request_deliveries"), request_id, tenant_id, after, limit + 1)
        items = [msgspec.convert(delivery_from_row(row), type=Delivery) for row in rows[:limit]]
        return DeliveryPage(items=items, next_cursor=encode_cursor(items[-1].id) if len(rows) > limit else None)

    @post("/{request_id:uuid}/cancel", status_code=202, summary="Cancel a request")
    async def cancel(
        self,
        request_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        services: NamedDependency[GatewayServices],
    ) -> RequestState:
        """A request not yet started ends CANCELLED at once; a running one is cancelled through its workflow."""
        tenant_id = current_tenant(request)
        bind_log_context(request_id=request_id)
        async with services.pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(sql("lock_request"), request_id, tenant_id)
            if row is None:
                raise NotFound(f"request {request_id} does not exist")
            if row["status"] in TERMINAL_STATUSES:
                raise Conflict(f"request {request_id} already ended {row['status']}; it cannot be cancelled")
            if row["status"] == INIT:
                await cancel_unstarted(connection, request_id)
            else:
                await connection.execute(sql("mark_cancel_requested"), request_id)
        return await load_state(services.pool, request_id, tenant_id)


async def _wait_until_terminal(
    services: GatewayServices,
    request: Request[Any, Any, Any],
    request_id: uuid.UUID,
    wait: float,
    past_version: int | None = None,
) -> None:
    """The long poll's wait (until the end, or a change past `past_version`), cut short (401) if the
    caller's key is revoked meanwhile."""
    assert services.streams.open_streams is not None
    lease = services.streams.open_streams.watch_key(current_tenant(request), current_key(request))
    try:
        await services.streams.wait_until_terminal(lease.tenant_id, request_id, wait, lease, past_version=past_version)
    finally:
        lease.release()
    if lease.revoked:
        raise Unauthorized("the API key was revoked")


async def _answer_accepted(
    services: GatewayServices, request: Request[Any, Any, Any], body: dict[str, Any]
) -> Response[Any]:
    """The answer to an accept: `202` with `body`, or, under `Prefer: wait=N`, the final state (`200`)
    if the request ends within N seconds. The wait comes after the commit: the accept stays one statement."""
    prefer = request.headers.get("prefer") or ""
    respond_async = _RESPOND_ASYNC.search(prefer) is not None
    wait = None if respond_async else _preferred_wait(prefer)
    if not wait:
        response = _accepted(body, services.settings)
        if respond_async:
            response.headers["Preference-Applied"] = "respond-async"
        return response
    request.state[WAITED_STATE] = True  # the accept latency histogram leaves this answer out
    request_id, tenant_id = uuid.UUID(str(body["id"])), current_tenant(request)
    await _wait_until_terminal(services, request, request_id, wait)
    state = await load_state(services.pool, request_id, tenant_id, linked=True)
    applied = {"Preference-Applied": f"wait={wait:g}"}
    if state.status in TERMINAL_STATUSES:
        return Response(state, status_code=200, headers={"Location": body["links"]["self"], **applied})
    response = _accepted(body, services.settings)
    response.headers.update(applied)
    return response


def _accepted(body: dict[str, Any], settings: Settings) -> Response[Any]:
    headers = {"Location": body["links"]["self"], "Retry-After": str(settings.retry_after_seconds)}
    return Response(body, status_code=202, headers=headers)


async def load_state(
    pool: asyncpg.Pool, request_id: uuid.UUID, tenant_id: uuid.UUID, *, linked: bool = False
) -> RequestState:
    """The request's state; the current span (its GET's, its cancel's) names it and links to its trace,
    unless `linked` already (the second read of a long poll)."""
    row = await pool.fetchrow(sql("get_request"), request_id, tenant_id)
    if row is None:
        raise NotFound(f"request {request_id} does not exist")
    fields = dict(row)
    trace_context = fields.pop("trace_context")
    if not linked:
        link_current_span_to(request_id, trace_context)
    return _state(fields)


def _state(row: Any) -> RequestState:
    location = f"/v1/requests/{row['id']}"
    links = RequestLinks(self=location, events=f"{location}/events", deliveries=f"{location}/deliveries")
    fields = dict(row)
    progress, waiting = fields.pop("progress"), fields.pop("waiting")
    return RequestState(
        **fields,
        progress=None if progress is None else msgspec.convert(progress, Progress),
        waiting=None if waiting is None else msgspec.convert(waiting, Waiting),
        links=links,
    )


def _preferred_wait(prefer: str | None) -> float | None:
    """The `wait` preference of a `Prefer` header (RFC 7240), capped at the maximum; None if absent."""
    match = _PREFER_WAIT.search(prefer or "")
    return None if match is None else min(float(match[1]), MAX_WAIT_SECONDS)
