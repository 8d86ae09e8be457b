"""Traces end to end: one POST makes one connected trace through the gateway, the relay, Temporal,
the handler and every webhook attempt, recorded in memory (tests/tracing.py) across the real roles."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
import websockets
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow.handlers import HandlerRegistry
from ackflow.settings import Settings
from ackflow.tracing import span_context_of
from activities.worker import register_kinds
from tests.conftest import Tenant, api_client, running_roles
from tests.e2e.conftest import FAST_SCHEDULE
from tests.e2e.test_webhooks import register
from tests.helpers import assert_eventually, wait_for_status
from tests.receiver import Receiver
from tests.tracing import SpanRecorder, spans

__all__ = ["spans"]  # the fixture

CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"


@contextlib.asynccontextmanager
async def traced_stack(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: Redis,
    temporal: Client,
    registry: HandlerRegistry,
    api_key: str,
    **roles: bool,
) -> AsyncIterator[httpx.AsyncClient]:
    """The roles (started after the recorder is installed, so they trace) with fast webhook retries."""
    fast = replace(settings, webhook_retry_schedule=FAST_SCHEDULE, webhook_lease_seconds=2)
    async with running_roles(fast, pool, redis, temporal, registry, **roles), api_client(fast, api_key) as client:
        yield client


@pytest.fixture
async def http(
    spans: SpanRecorder,
    settings: Settings,
    pool: asyncpg.Pool,
    redis: Redis,
    temporal: Client,
    registry: HandlerRegistry,
    tenant: Tenant,
) -> AsyncIterator[httpx.AsyncClient]:
    async with traced_stack(settings, pool, redis, temporal, registry, tenant.api_key) as client:
        yield client


def _traceparent(span: ReadableSpan) -> str:
    assert span.context is not None
    ids = f"{trace.format_trace_id(span.context.trace_id)}-{trace.format_span_id(span.context.span_id)}"
    return f"00-{ids}-{span.context.trace_flags:02x}"


def _trace_of(recorded: SpanRecorder, trace_id: int) -> list[ReadableSpan]:
    return [s for s in recorded.finished() if s.context is not None and s.context.trace_id == trace_id]


def _named(found: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in found if s.name == name]


def _succeeded(found: list[ReadableSpan]) -> ReadableSpan:
    """The one span that did not fail among spans of a step that may have been retried (the relay's
    first dispatch may find no worker polling yet: it is an error span, and tried again)."""
    [succeeded] = [s for s in found if s.status.status_code != StatusCode.ERROR]
    return succeeded


def _parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


async def _stored_context(pool: asyncpg.Pool, request_id: str) -> trace.SpanContext:
    traceparent = await pool.fetchval("SELECT trace_context FROM requests WHERE id = $1", uuid.UUID(request_id))
    stored = span_context_of(traceparent)
    assert stored is not None, "the accept stored no trace context"
    return stored


def _assert_connected(in_trace: list[ReadableSpan], root: ReadableSpan, outside_parent: int | None) -> None:
    """One root (the POST's span, whose parent is the client's when it sent one), every other span's
    parent inside the trace."""
    ids = {s.context.span_id for s in in_trace if s.context is not None}
    assert _parent_id(root) == outside_parent
    orphans = [s.name for s in in_trace if s is not root and _parent_id(s) not in ids]
    assert not orphans, f"spans whose parent is not in the trace: {orphans}"


@pytest.mark.parametrize("client_traced", [False, True], ids=["new trace", "client's trace"])
async def test_one_post_makes_one_connected_trace_through_gateway_relay_workflow_handler_and_webhook(
    http: httpx.AsyncClient, receiver: Receiver, spans: SpanRecorder, pool: asyncpg.Pool, client_traced: bool
) -> None:
    endpoint = await register(http, receiver.url(), ["request.done"])
    receiver.reply_with(500)  # the first attempt fails: the retry workflow's attempt is traced too
    headers = {"traceparent": f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"} if client_traced else {}

    response = await http.post("/v1/requests", json={"kind": "echo", "payload": {"n": 1}}, headers=headers)
    assert response.status_code == 202, response.text
    request_id = str(response.json()["id"])
    await wait_for_status(http, request_id, {"DONE"})
    stored = await _stored_context(pool, request_id)

    async def both_attempts_traced() -> bool:
        return len(_named(_trace_of(spans, stored.trace_id), "ackflow.webhook.attempt")) == 2

    await assert_eventually(both_attempts_traced, timeout=30, message="the two webhook attempts were not traced")
    in_trace = _trace_of(spans, stored.trace_id)
    by_id = {s.context.span_id: s for s in in_trace if s.context is not None}

    [post] = [s for s in in_trace if s.kind == SpanKind.SERVER and s.name.startswith("POST")]
    assert post.context is not None and post.context.span_id == stored.span_id, "the accept stored the POST's span"
    assert post.attributes is not None and post.attributes["ackflow.request_id"] == request_id
    if client_traced:
        assert trace.format_trace_id(stored.trace_id) == CLIENT_TRACE_ID
    _assert_connected(in_trace, post, int(CLIENT_SPAN_ID, 16) if client_traced else None)

    dispatches = _named(in_trace, "ackflow.relay.dispatch")
    assert {_parent_id(s) for s in dispatches} == {post.context.span_id}
    dispatch = _succeeded(dispatches)
    assert dispatch.attributes is not None and dispatch.attributes["ackflow.request_id"] == request_id
    [start] = _named(in_trace, "StartWorkflow:ProcessBatchWorkflow")
    assert _parent_id(start) == dispatch.context.span_id
    assert _named(in_trace, "RunWorkflow:ProcessBatchWorkflow")
    [run_batch] = _named(in_trace, "RunActivity:run_batch")
    [handler] = _named(in_trace, "ackflow.handler echo")
    assert _parent_id(handler) == run_batch.context.span_id
    assert handler.attributes is not None
    assert handler.attributes["ackflow.request_id"] == request_id and handler.attributes["ackflow.kind"] == "echo"
    assert handler.attributes["ackflow.tenant"] and handler.status.status_code == StatusCode.OK

    attempts = sorted(_named(in_trace, "ackflow.webhook.attempt"), key=lambda s: s.start_time or 0)
    assert [s.kind for s in attempts] == [SpanKind.CLIENT, SpanKind.CLIENT]
    assert [(s.attributes or {}).get("http.response.status_code") for s in attempts] == [500, 200]
    assert [(s.attributes or {}).get("ackflow.webhook.attempt_number") for s in attempts] == [1, 2]
    assert {(s.attributes or {}).get("ackflow.webhook.endpoint_id") for s in attempts} == {endpoint["id"]}
    assert [s.status.status_code for s in attempts] == [StatusCode.ERROR, StatusCode.OK]
    assert _parent_id(attempts[0]) == post.context.span_id, "the dispatcher's first attempt: a child of the POST"
    retry_parent = by_id[_parent_id(attempts[1])]
    assert retry_parent.name.startswith("RunActivity:"), "the retry workflow's attempt: under its activity"

    sent = [r.headers.get("traceparent") for r in receiver.received]
    assert sent == [_traceparent(s) for s in attempts], "the partner gets each attempt's traceparent"
    for received in receiver.received:
        received.verify(endpoint["secret"])  # the signature does not cover (nor break on) the header


@pytest.mark.parametrize("path", ["", "/events"], ids=["status", "event stream"])
async def test_a_later_get_of_the_request_is_a_span_naming_it_and_linked_to_its_trace(
    http: httpx.AsyncClient, spans: SpanRecorder, pool: asyncpg.Pool, path: str
) -> None:
    response = await http.post("/v1/requests", json={"kind": "echo", "payload": {}})
    request_id = str(response.json()["id"])
    await wait_for_status(http, request_id, {"DONE"})
    stored = await _stored_context(pool, request_id)
    spans.clear()

    answer = await http.get(f"/v1/requests/{request_id}{path}")  # the stream of an ended request ends too
    assert answer.status_code == 200 and answer.content

    async def the_get() -> list[ReadableSpan]:
        return [s for s in spans.finished() if s.kind == SpanKind.SERVER and s.name.startswith("GET")]

    [get] = await assert_eventually(the_get, message="the GET made no span")
    assert get.name == f"GET /v1/requests/{{id}}{path}", "named by its route, not by the request's id"
    assert get.attributes is not None and get.attributes["ackflow.request_id"] == request_id
    assert [(link.context.trace_id, link.context.span_id) for link in get.links] == [(stored.trace_id, stored.span_id)]
    assert get.context is not None and get.context.trace_id != stored.trace_id, "a trace of its own, linked"


async def test_a_long_poll_of_the_request_is_one_span_linked_once_to_its_trace(
    http: httpx.AsyncClient, spans: SpanRecorder, pool: asyncpg.Pool
) -> None:
    response = await http.post("/v1/requests", json={"kind": "sleep", "payload": {"seconds": 0.5}})
    request_id = str(response.json()["id"])
    stored = await _stored_context(pool, request_id)

    polled = await http.get(f"/v1/requests/{request_id}", params={"wait": 20})  # read before and after the wait
    assert polled.json()["status"] == "DONE"

    async def the_poll() -> list[ReadableSpan]:
        return [s for s in spans.finished() if s.name == "GET /v1/requests/{id}"]

    [poll] = await assert_eventually(the_poll, message="the long poll made no span")
    assert [(link.context.trace_id, link.context.span_id) for link in poll.links] == [(stored.trace_id, stored.span_id)]


async def test_a_websocket_of_the_request_is_a_span_naming_it_and_linked_to_its_trace(
    http: httpx.AsyncClient, spans: SpanRecorder, pool: asyncpg.Pool, settings: Settings
) -> None:
    accepted = (await http.post("/v1/requests", json={"kind": "echo", "payload": {}})).json()
    request_id = str(accepted["id"])
    await wait_for_status(http, request_id, {"DONE"})
    stored = await _stored_context(pool, request_id)

    url = f"ws://127.0.0.1:{settings.http_port}{accepted['links']['events'].replace('/events?', '/ws?')}"
    async with websockets.connect(url) as socket:
        received = [json.loads(raw) async for raw in socket]
    assert received[-1]["event"] == "request.done"

    async def the_socket() -> list[ReadableSpan]:
        return [s for s in spans.finished() if s.name == "/v1/requests/{id}/ws"]

    [opened] = await assert_eventually(the_socket, message="the WebSocket made no span")
    assert opened.attributes is not None and opened.attributes["ackflow.request_id"] == request_id
    assert [(link.context.trace_id, link.context.span_id) for link in opened.links] == [
        (stored.trace_id, stored.span_id)
    ]


async def test_health_probes_make_no_span(http: httpx.AsyncClient, spans: SpanRecorder) -> None:
    spans.clear()
    assert (await http.get("/health/live")).status_code == 200
    assert (await http.get("/v1/requests")).status_code == 200  # a span, so the probe's absence means something

    async def listed() -> bool:
        return any(s.name.startswith("GET") for s in spans.finished())

    await assert_eventually(listed, message="the listing made no span")
    assert [s.name for s in spans.finished() if "/health" in s.name] == []


async def test_each_request_of_a_batch_of_several_has_its_handler_and_webhook_in_its_own_trace(
    spans: SpanRecorder,
    settings: Settings,
    pool: asyncpg.Pool,
    redis: Redis,
    temporal: Client,
    registry: HandlerRegistry,
    tenant: Tenant,
    receiver: Receiver,
) -> None:
    roles: dict[str, Any] = {"settings": settings, "pool": pool, "redis": redis, "temporal": temporal}
    await register_kinds(pool, registry, settings.task_queue)  # as the worker will, so the gateway accepts them
    async with traced_stack(**roles, registry=registry, api_key=tenant.api_key, relay=False, worker=False) as http:
        await register(http, receiver.url(), ["request.done"])
        accepted = [await http.post("/v1/requests", json={"kind": "echo", "payload": {"n": n}}) for n in range(3)]
        ids = [str(response.json()["id"]) for response in accepted]
        # The relay starts once all three wait: its first claim admits them together, as one batch.
        async with traced_stack(**roles, registry=registry, api_key=tenant.api_key, gateway=False):
            for request_id in ids:
                await wait_for_status(http, request_id, {"DONE"})
            await assert_eventually(lambda: _received(receiver, 3), timeout=30, message="the webhooks did not arrive")

    batch = _succeeded(_named(list(spans.finished()), "ackflow.relay.dispatch_batch"))
    assert batch.context is not None
    stored = [await _stored_context(pool, request_id) for request_id in ids]
    assert sorted((link.context.trace_id, link.context.span_id) for link in batch.links) == sorted(
        (s.trace_id, s.span_id) for s in stored
    ), "the batch's dispatch links to every member's trace"
    for request_id, context in zip(ids, stored, strict=True):
        in_trace = _trace_of(spans, context.trace_id)
        dispatch = _succeeded(_named(in_trace, "ackflow.relay.dispatch"))
        assert _parent_id(dispatch) == context.span_id
        assert [link.context.span_id for link in dispatch.links] == [batch.context.span_id]
        [handler] = _named(in_trace, "ackflow.handler echo")
        assert handler.attributes is not None and handler.attributes["ackflow.request_id"] == request_id
        assert _parent_id(handler) == context.span_id, "in its request's trace, not the batch's"
        assert [link.context.trace_id for link in handler.links] == [batch.context.trace_id], "linked to RunActivity"
        [attempt] = _named(in_trace, "ackflow.webhook.attempt")
        assert _parent_id(attempt) == context.span_id


async def _received(receiver: Receiver, count: int) -> bool:
    return len(receiver.received) >= count
