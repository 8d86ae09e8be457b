"""Live results: Server-Sent Events and WebSocket for one request, and SSE for all of a tenant's.

SSE: `id:` is the request_events id, `event:` the topic, `data:` the request's state; a reconnect
with `Last-Event-ID` (header, or `last_event_id` query for clients that cannot set it) resumes
exactly after it. A request's stream ends after its terminal event; reconnecting after that answers
204, which tells EventSource to stop. A keep-alive comment goes out every 15 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from litestar import Controller, Request, Response, WebSocket, get, websocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath, QueryParameter
from litestar.response import Stream
from litestar.status_codes import WS_1000_NORMAL_CLOSURE, WS_1008_POLICY_VIOLATION, WS_1013_TRY_AGAIN_LATER

from ackflow.contracts import ALL_STATUSES, TAG_PATTERN
from ackflow.errors import InvalidInput, NotFound, TooManyRequests
from ackflow.handlers import KIND_PATTERN
from ackflow.inputs import parse_digits
from ackflow.sse import comment_frame, retry_frame
from ackflow.tracing import link_current_span_to
from gateway.auth import current_key, current_tenant, require_api_key, require_key_or_capability
from gateway.capability_cors import CapabilityCors
from gateway.event_filter import EventFilter
from gateway.services import GatewayServices
from gateway.stream_items import FLUSH, KEEPALIVE, OVERFLOW, REVOKED, StreamEvent, StreamItem

SSE_RETRY = retry_frame(2000)
SSE_KEEPALIVE = comment_frame("keep-alive")
SSE_OVERFLOW = comment_frame("too slow: reconnect with Last-Event-ID to catch up")
SSE_REVOKED = comment_frame("the API key was revoked")
SSE_HEADERS = {"Cache-Control": "no-cache", "Connection": "keep-alive", "X-Accel-Buffering": "no"}
MAX_EVENT_ID = 2**63 - 1


class RequestStreamsController(Controller):
    """One request's events, opened with the API key or the request's capability token."""

    path = "/v1/requests/{request_id:uuid}"
    guards = [require_key_or_capability]
    middleware = [CapabilityCors()]  # opened with its capability URL, readable from any origin
    tags = ["live results"]

    @get("/events", summary="Server-Sent Events of one request", media_type="text/event-stream")
    async def events(
        self,
        request: Request[Any, Any, Any],
        request_id: FromPath[uuid.UUID],
        services: NamedDependency[GatewayServices],
        last_event_id: Annotated[int | None, QueryParameter(ge=0, le=MAX_EVENT_ID)] = None,
        token: Annotated[str | None, QueryParameter(max_length=200)] = None,
    ) -> Response[Any]:
        tenant_id, streams = current_tenant(request), services.streams
        after = _last_event_id(request.headers.get("last-event-id"), last_event_id)
        position = await streams.position(tenant_id, request_id, after)
        if position is None:
            raise NotFound(f"request {request_id} does not exist")
        link_current_span_to(request_id, position.trace_context)
        if position.finished_for_client:
            return Response(None, status_code=204)  # tells EventSource the stream is over
        lease = await streams.open_stream(tenant_id, current_key(request))
        items = streams.follow_request(tenant_id, request_id, position.seen_version, lease)
        return _event_stream(items, lease.release)

    @websocket("/ws")
    async def socket(
        self,
        socket: WebSocket[Any, Any, Any],
        request_id: FromPath[uuid.UUID],
        services: NamedDependency[GatewayServices],
        last_event_id: Annotated[int | None, QueryParameter(ge=0, le=MAX_EVENT_ID)] = None,
        token: Annotated[str | None, QueryParameter(max_length=200)] = None,
    ) -> None:
        """The same events as JSON messages `{id, event, data}`; pings; a normal close after the terminal one.

        What the client sends is read and ignored (uvicorn closes the socket with 1009 for a message
        over ACKFLOW_WS_MAX_MESSAGE_BYTES)."""
        tenant_id, streams = current_tenant(socket), services.streams
        position = await streams.position(tenant_id, request_id, last_event_id or 0)
        await socket.accept()
        if position is None:
            await socket.close(code=4404, reason="no such request")
            return
        link_current_span_to(request_id, position.trace_context)
        try:
            lease = await streams.open_stream(tenant_id, current_key(socket), "websocket")
        except TooManyRequests:
            await socket.close(code=WS_1013_TRY_AGAIN_LATER, reason="too many open streams for this tenant")
            return
        try:
            items = streams.follow_request(tenant_id, request_id, position.seen_version, lease)
            ending = await _relay_while_reading(socket, items)
            if ending is not None:
                with contextlib.suppress(WebSocketDisconnect):
                    await socket.close(code=ending[0], reason=ending[1])
        finally:
            lease.release()


class TenantStreamsController(Controller):
    """All of the tenant's events (API key only)."""

    path = "/v1/events"
    guards = [require_api_key]
    tags = ["live results"]

    @get("/", summary="Server-Sent Events of all the tenant's requests", media_type="text/event-stream")
    async def events(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[GatewayServices],
        kind: Annotated[str | None, QueryParameter(pattern=KIND_PATTERN.pattern)] = None,
        status: Annotated[str | None, QueryParameter(max_length=20)] = None,
        last_event_id: Annotated[int | None, QueryParameter(ge=0, le=MAX_EVENT_ID)] = None,
        tag: Annotated[
            str | None, QueryParameter(pattern=TAG_PATTERN, description="only requests with this tag")
        ] = None,
    ) -> Stream:
        if status is not None and status not in ALL_STATUSES:
            raise InvalidInput(
                f"status must be one of {', '.join(ALL_STATUSES)}",
                status_code=400,
                errors=[{"field": "status", "in": "query", "message": "unknown status"}],
            )
        tenant_id, streams = current_tenant(request), services.streams
        header = request.headers.get("last-event-id")
        after = _last_event_id(header, last_event_id) if header or last_event_id is not None else None
        lease = await streams.open_stream(tenant_id, current_key(request))
        items = streams.follow_tenant(tenant_id, after, EventFilter(kind, status, tag), lease)
        return _event_stream(items, lease.release)


def _last_event_id(header: str | None, query: int | None) -> int:
    if header is None or not header.strip():
        return query or 0
    event_id = parse_digits(header.strip(), maximum=MAX_EVENT_ID)
    if event_id is None:
        raise InvalidInput(
            "Last-Event-ID must be an event id this API sent",
            status_code=400,
            errors=[{"field": "Last-Event-ID", "in": "header", "message": "not an event id"}],
        )
    return event_id


def _event_stream(items: AsyncIterator[StreamItem], release: Callable[[], None]) -> Stream:
    # A plain Stream of ready-made frames, not Litestar's ServerSentEvent: that one encodes every
    # message again for every client, and fetches its `retry:` line through a worker thread.
    return Stream(_sse(items, release), media_type="text/event-stream", headers=SSE_HEADERS)


async def _sse(items: AsyncIterator[StreamItem], release: Callable[[], None]) -> AsyncIterator[bytes]:
    """The frames of `items`, gathered until FLUSH: events queued together leave in one write."""
    try:
        yield SSE_RETRY
        frames: list[bytes] = []
        async for item in items:
            if isinstance(item, StreamEvent):
                frames.append(item.sse)  # the same bytes for every client of this event
            elif item is KEEPALIVE:
                frames.append(SSE_KEEPALIVE)  # a comment only, not an empty event
            elif item is OVERFLOW:
                frames.append(SSE_OVERFLOW)
            elif item is REVOKED:
                frames.append(SSE_REVOKED)
            if frames and (item is FLUSH or item is KEEPALIVE or item is OVERFLOW or item is REVOKED):
                yield b"".join(frames)
                frames.clear()
        if frames:
            yield b"".join(frames)
    finally:
        release()


async def _relay_while_reading(
    socket: WebSocket[Any, Any, Any], items: AsyncIterator[StreamItem]
) -> tuple[int, str] | None:
    """Relay `items` to the socket while reading what the client sends, so its messages never pile up
    in buffers (uvicorn stops reading the socket until the app takes the last message) and its close
    ends the relay at once. The close code and reason to send; None if the client is gone."""
    relay = asyncio.create_task(_relay_to_socket(socket, items))
    reader = asyncio.create_task(_discard_until_disconnect(socket))
    try:
        await asyncio.wait((relay, reader), return_when=asyncio.FIRST_COMPLETED)
    finally:
        relay.cancel()
        reader.cancel()
        await asyncio.wait((relay, reader))
    failure = None if reader.cancelled() else reader.exception()
    if failure is not None:
        raise failure
    if relay.cancelled() or isinstance(relay.exception(), WebSocketDisconnect):
        return None
    return relay.result()


async def _discard_until_disconnect(socket: WebSocket[Any, Any, Any]) -> None:
    """Read the client's messages and drop them: clients have nothing to say on this socket."""
    with contextlib.suppress(WebSocketDisconnect):
        while (await socket.receive())["type"] != "websocket.disconnect":
            pass


async def _relay_to_socket(socket: WebSocket[Any, Any, Any], items: AsyncIterator[StreamItem]) -> tuple[int, str]:
    async for item in items:
        if isinstance(item, StreamEvent):
            await socket.send_json({"id": item.id, "event": item.topic, "data": item.data})
        elif item is KEEPALIVE:
            await socket.send_json({"event": "ping"})
        elif item is OVERFLOW:
            return WS_1013_TRY_AGAIN_LATER, "too slow: reconnect with last_event_id to catch up"
        elif item is REVOKED:
            return WS_1008_POLICY_VIOLATION, "the API key was revoked"
    return WS_1000_NORMAL_CLOSURE, "request finished"
