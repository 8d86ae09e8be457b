"""The Python client (ackflow.client) against the whole running stack: gateway, relay and worker.

Broken networks are simulated by httpx transports wrapped around the real one (a proxy that
refuses streams, one that buffers them, a connection that drops), never by mocking the server.
The last tests feed hand-written bytes through `httpx.MockTransport` instead, for what the real
gateway never sends: lone CR line ends, a BOM, an id with NUL, a proxy's HTML error page.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from ackflow.client import AckflowClient, ApiError, RequestState, StreamEvent, StreamUnavailable, WaitTimeout
from ackflow.settings import Settings
from tests.conftest import Tenant
from tests.helpers import assert_eventually

EVENTS_OF_A_SUCCESS = ["request.accepted", "request.processing", "request.done"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings, with a keep-alive every 0.2 s so the streams here carry some."""
    return dataclasses.replace(settings, stream_keepalive_seconds=0.2)


def make_client(
    settings: Settings,
    api_key: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    stream_retries: int = 3,
    stream_idle_timeout: float = 45.0,
) -> AckflowClient:
    """The client of the test gateway, on the real network unless `transport` wraps it."""
    return AckflowClient(
        f"http://127.0.0.1:{settings.http_port}",
        api_key=api_key,
        transport=transport,
        stream_retries=stream_retries,
        stream_idle_timeout=stream_idle_timeout,
    )


@pytest.fixture
async def sdk(stack: None, settings: Settings, tenant: Tenant) -> AsyncIterator[AckflowClient]:
    """The client, authenticated as `tenant`, talking to the running gateway."""
    async with make_client(settings, tenant.api_key) as client:
        yield client


async def collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in events]


class RecordingTransport(httpx.AsyncBaseTransport):
    """The real network, recording each request; subclasses break the event streams in one way."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    def stream_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.endswith("/events")]

    def long_polls(self) -> list[httpx.Request]:
        return [r for r in self.requests if "wait" in r.url.params]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class RefusingStreamsTransport(RecordingTransport):
    """Like a proxy that cannot stream: every /events request fails to connect."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            self.requests.append(request)
            raise httpx.ConnectError("the test proxy refuses event streams", request=request)
        return await super().handle_async_request(request)


class HeldBody(httpx.AsyncByteStream):
    """A buffering proxy's body: nothing until the whole upstream body has arrived."""

    def __init__(self, upstream: httpx.AsyncByteStream) -> None:
        self.upstream = upstream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"".join([chunk async for chunk in self.upstream])

    async def aclose(self) -> None:
        await self.upstream.aclose()


class BufferingStreamsTransport(RecordingTransport):
    """Like a proxy that buffers responses: an event stream arrives only when it has ended."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.url.path.endswith("/events"):
            assert isinstance(response.stream, httpx.AsyncByteStream)
            response.stream = HeldBody(response.stream)
        return response


class CutAfterFirstEvent(httpx.AsyncByteStream):
    """The body up to the end of its first event, then the connection drops."""

    def __init__(self, upstream: httpx.AsyncByteStream) -> None:
        self.upstream = upstream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = b""
        async for chunk in self.upstream:
            received += chunk
            end = received.find(b"\r\n\r\n", received.find(b"\nid:"))
            if end >= 0:
                yield received[: end + 4]
                raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    async def aclose(self) -> None:
        await self.upstream.aclose()


class DroppingFirstStreamTransport(RecordingTransport):
    """The first event stream drops after one event; later ones are left alone."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.url.path.endswith("/events") and len(self.stream_requests()) == 1:
            assert isinstance(response.stream, httpx.AsyncByteStream)
            response.stream = CutAfterFirstEvent(response.stream)
        return response


async def test_submit_then_wait_returns_done_with_the_echoed_result(sdk: AckflowClient) -> None:
    accepted = await sdk.submit("echo", {"hello": "world"})

    assert accepted.status == "INIT" and accepted.kind == "echo" and accepted.version == 1
    assert accepted.links is not None and accepted.links.self == f"/v1/requests/{accepted.id}"
    assert accepted.links.events is not None and "token=" in accepted.links.events
    final = await sdk.wait(accepted.id, timeout=30)
    assert final.status == "DONE" and final.terminal
    assert final.result == {"hello": "world"} and final.payload == {"hello": "world"}
    assert final.error is None and final.completed_at is not None
    assert await sdk.get(accepted.id) == final


async def test_submit_with_wait_returns_the_final_state_when_fast_and_the_accepted_one_when_not(
    sdk: AckflowClient,
) -> None:
    fast = await sdk.submit("echo", {"hello": "world"}, wait=10)
    assert fast.terminal and fast.status == "DONE" and fast.result == {"hello": "world"}
    assert fast.completed_at is not None and (await sdk.get(fast.id)).version == fast.version

    slow = await sdk.submit("sleep", {"seconds": 30}, wait=1)
    assert slow.status == "INIT" and not slow.terminal
    await sdk.cancel(slow.id)


async def test_send_input_approves_a_waiting_pipeline_which_then_ends_done(sdk: AckflowClient) -> None:
    accepted = await sdk.submit("pipeline", {"items": 2, "step_seconds": 0})

    async def waiting() -> RequestState | None:
        state = await sdk.get(accepted.id)
        return state if state.waiting is not None else None

    state = await assert_eventually(waiting, timeout=60, message="the pipeline never waited for its approval")
    assert state.waiting is not None and state.waiting.input == "approval"
    assert state.links is not None and state.links.input is not None and "token=" in state.links.input

    delivered = await sdk.send_input(accepted.id, "approval", {"approved": True, "by": "ana"})
    assert delivered.waiting is None and delivered.version > state.version
    with pytest.raises(ApiError) as again:
        await sdk.send_input(accepted.id, "approval", {"approved": True, "by": "bob"})
    assert again.value.status == 409
    final = await sdk.wait(accepted.id, timeout=60)
    assert final.status == "DONE" and final.result is not None and final.result["approved_by"] == "ana"
    assert final.progress is not None and final.progress.fraction == 1.0


async def test_wait_returns_the_failed_state_with_its_error_instead_of_raising(sdk: AckflowClient) -> None:
    accepted = await sdk.submit("fail", {"message": "out of paper"})

    final = await sdk.wait(accepted.id, timeout=30)

    assert final.status == "FAILED" and final.result is None
    assert final.error is not None and final.error["message"] == "out of paper"


async def test_events_yield_accepted_processing_done_in_order_then_end(sdk: AckflowClient) -> None:
    accepted = await sdk.submit("sleep", {"seconds": 0.5})

    events = await asyncio.wait_for(collect(sdk.events(accepted.id)), timeout=30)

    assert [e.event for e in events] == EVENTS_OF_A_SUCCESS, "keep-alives must not surface as events"
    assert [e.state.status for e in events] == ["INIT", "PROCESSING", "DONE"]
    assert [e.state.version for e in events] == [1, 2, 3]
    ids = [int(e.id) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert events[-1].state.result == {"slept": 0.5}


async def test_events_after_a_last_event_id_resume_with_the_next_event(sdk: AckflowClient) -> None:
    accepted = await sdk.submit("echo", {"n": 1})
    everything = await asyncio.wait_for(collect(sdk.events(accepted.id)), timeout=30)

    rest = await collect(sdk.events(accepted.id, last_event_id=everything[0].id))
    after_the_end = await collect(sdk.events(accepted.id, last_event_id=int(everything[-1].id)))

    assert [e.id for e in rest] == [e.id for e in everything[1:]]
    assert [e.event for e in rest] == ["request.processing", "request.done"]
    assert after_the_end == [], "after the terminal event the stream answers 204 and the iterator ends"


async def test_events_resume_after_a_dropped_connection_without_repeating_or_skipping(
    stack: None, settings: Settings, tenant: Tenant
) -> None:
    transport = DroppingFirstStreamTransport()
    async with make_client(settings, tenant.api_key, transport=transport) as client:
        accepted = await client.submit("sleep", {"seconds": 0.5})
        events = await asyncio.wait_for(collect(client.events(accepted.id)), timeout=30)

    assert [e.event for e in events] == EVENTS_OF_A_SUCCESS
    first, second = transport.stream_requests()
    assert "last-event-id" not in first.headers
    assert second.headers["last-event-id"] == events[0].id


async def test_events_keep_text_with_unicode_line_separators_intact(sdk: AckflowClient) -> None:
    payload = {"text": "one\u2028two\u2029three\x85four\x0bfive", "emoji": "\U0001f600"}
    accepted = await sdk.submit("echo", payload)

    events = await asyncio.wait_for(collect(sdk.events(accepted.id)), timeout=30)

    assert [e.event for e in events] == EVENTS_OF_A_SUCCESS
    assert events[-1].state.result == payload


async def test_wait_falls_back_to_long_polling_when_event_streams_are_refused(
    stack: None, settings: Settings, tenant: Tenant
) -> None:
    transport = RefusingStreamsTransport()
    async with make_client(settings, tenant.api_key, transport=transport, stream_retries=2) as client:
        accepted = await client.submit("sleep", {"seconds": 0.5})
        final = await client.wait(accepted.id, timeout=30)

    assert final.status == "DONE" and final.result == {"slept": 0.5}
    assert len(transport.stream_requests()) == 3, "one try and two retries before falling back"
    assert transport.long_polls(), "the result must have come by long polling"


async def test_wait_falls_back_to_long_polling_at_once_when_a_proxy_buffers_the_stream(
    stack: None, settings: Settings, tenant: Tenant
) -> None:
    transport = BufferingStreamsTransport()
    async with make_client(settings, tenant.api_key, transport=transport, stream_idle_timeout=0.5) as client:
        accepted = await client.submit("sleep", {"seconds": 3})
        started = time.monotonic()
        final = await client.wait(accepted.id, timeout=30)

    assert final.status == "DONE" and final.result == {"slept": 3.0}
    assert len(transport.stream_requests()) == 1, "a silent stream means buffering: no point in retrying it"
    assert transport.long_polls()
    assert time.monotonic() - started < 10


async def test_cancelling_a_running_sleep_ends_cancelled(sdk: AckflowClient) -> None:
    accepted = await sdk.submit("sleep", {"seconds": 60})
    async with contextlib.aclosing(sdk.events(accepted.id)) as events:
        async for event in events:
            if event.state.status == "PROCESSING":
                break

    answered = await sdk.cancel(accepted.id)
    final = await sdk.wait(accepted.id, timeout=30)

    assert answered.status in {"PROCESSING", "CANCELLED"}
    assert final.status == "CANCELLED" and final.result is None and final.completed_at is not None
    with pytest.raises(ApiError) as caught:
        await sdk.cancel(accepted.id)
    assert caught.value.status == 409 and caught.value.type == "urn:ackflow:problem:conflict"


async def test_unknown_kind_raises_api_error_with_the_problem_fields(sdk: AckflowClient) -> None:
    with pytest.raises(ApiError) as caught:
        await sdk.submit("no_such_kind", {})

    error = caught.value
    assert error.status == 422 and error.type == "urn:ackflow:problem:unknown-kind"
    assert error.title == "Unknown request kind" and error.detail and "no_such_kind" in error.detail
    assert error.errors == [{"field": "kind", "in": "body", "message": "no handler is registered for this kind"}]
    assert str(error).startswith("422 Unknown request kind: no worker handles kind 'no_such_kind'")
    assert "[kind: no handler is registered for this kind]" in str(error)


async def test_wrong_api_key_raises_401_api_error_that_does_not_show_the_key(
    stack: None, settings: Settings, tenant: Tenant
) -> None:
    wrong_key = tenant.api_key[:-6] + ("000000" if not tenant.api_key.endswith("000000") else "111111")
    async with make_client(settings, wrong_key) as client:
        with pytest.raises(ApiError) as caught:
            await client.list()

    assert caught.value.status == 401 and caught.value.type == "urn:ackflow:problem:unauthorized"
    assert wrong_key not in str(caught.value) and wrong_key not in repr(caught.value)
    assert wrong_key not in repr(client)


async def test_list_pages_through_requests_newest_first_with_the_cursor(sdk: AckflowClient) -> None:
    echoes = [(await sdk.submit("echo", {"n": n})).id for n in range(3)]
    failed = await sdk.submit("fail", {})
    for request_id in [*echoes, failed.id]:
        await sdk.wait(request_id, timeout=30)

    first = await sdk.list(kind="echo", limit=2)
    assert first.next_cursor is not None
    second = await sdk.list(kind="echo", limit=2, cursor=first.next_cursor)
    failures = await sdk.list(status="FAILED")

    listed = [s.id for s in first.items + second.items]
    assert sorted(listed) == sorted(echoes)
    assert listed == sorted(listed, key=uuid.UUID, reverse=True), "newest first: ids are UUIDv7"
    assert second.next_cursor is None
    assert all(isinstance(s, RequestState) and s.status == "DONE" for s in first.items + second.items)
    assert [s.id for s in failures.items] == [failed.id]


async def test_wait_with_a_short_timeout_raises_a_timeout_error_naming_the_request(sdk: AckflowClient) -> None:
    accepted = await sdk.submit("sleep", {"seconds": 60})
    started = time.monotonic()

    with pytest.raises(WaitTimeout) as caught:
        await sdk.wait(accepted.id, timeout=0.5)

    assert time.monotonic() - started < 5
    assert isinstance(caught.value, TimeoutError)
    assert accepted.id in str(caught.value) and "0.5 s" in str(caught.value)
    assert caught.value.last_state is not None and caught.value.last_state.status in {"INIT", "PROCESSING"}
    assert (await sdk.get(accepted.id)).status in {"INIT", "PROCESSING"}, "a timed-out wait leaves the request be"
    await sdk.cancel(accepted.id)


class ChunkedBody(httpx.AsyncByteStream):
    """A response body delivered in exactly these chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


WIRE = (
    "\ufeffid: 7\r\n"
    ": a comment\r\n"
    "retry: 10\r\n"
    "event: request.accepted\r\n"
    'data: {"id": "r1", "kind": "echo",\r\n'
    'data:  "status": "INIT", "version": 1, "a_field_from_the_future": [1]}\r\n'
    "\r\n"
    ": keep-alive\r\n"
    "data: \r\n"
    "\r\n"
    "id: 8\n"
    "event: request.processing\r"
    'data:{"id":"r1","kind":"echo","status":"PROCESSING","version":2,"result":"caf\u00e9"}\r\n'
    "unknown-field: ignored\r\n"
    "\r\n"
    "id: 9\r\n"
    "\r\n"
    "id: 10\u0000\r\n"
    "\r\n"
    "id: 11\r\n"
    "event: request.done\r\n"
    'data: {"id":"r1","kind":"echo","status":"DONE","version":3}'
).encode()


async def test_events_follow_the_whatwg_event_stream_rules_across_chunks_and_reconnects() -> None:
    split_crlf, split_e_acute = WIRE.index(b'"echo",\r\n') + 8, WIRE.index("\u00e9".encode()) + 1
    chunks = [WIRE[:split_crlf], WIRE[split_crlf:split_e_acute], WIRE[split_e_acute:]]
    done_ending_in_a_lone_cr = (
        b'id: 12\revent: request.done\rdata: {"id":"r1","kind":"echo","status":"DONE","version":3}\r\r'
    )
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = ChunkedBody(chunks if len(seen) == 1 else [done_ending_in_a_lone_cr])
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)

    async with AckflowClient("http://gateway", api_key="ak_x", transport=httpx.MockTransport(answer)) as client:
        events = await asyncio.wait_for(collect(client.events("r1")), timeout=5)

    assert [(e.id, e.event, e.state.status) for e in events] == [
        ("7", "request.accepted", "INIT"),
        ("8", "request.processing", "PROCESSING"),
        ("12", "request.done", "DONE"),
    ], "comments, empty keep-alive messages and an event cut off by the drop are not events"
    assert events[1].state.result == "caf\u00e9"
    assert len(seen) == 2, "the terminal event ends the iteration"
    assert "last-event-id" not in seen[0].headers
    assert seen[1].headers["last-event-id"] == "9", "an id-only block counts; an id with NUL does not"


async def test_events_give_up_with_stream_unavailable_after_the_allowed_retries() -> None:
    attempts: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    transport = httpx.MockTransport(refuse)
    async with AckflowClient("http://gateway", api_key="ak_x", transport=transport, stream_retries=2) as client:
        with pytest.raises(StreamUnavailable) as caught:
            await collect(client.events("r1"))

    assert len(attempts) == 3 and caught.value.attempts == 3
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert "r1" in str(caught.value)


async def test_an_error_page_that_is_not_a_problem_still_raises_a_readable_api_error() -> None:
    def proxy_error(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, headers={"content-type": "text/html"}, text="<h1>Bad gateway</h1>")

    async with AckflowClient("http://gateway", api_key="ak_x", transport=httpx.MockTransport(proxy_error)) as client:
        with pytest.raises(ApiError) as caught:
            await client.list()

    assert (caught.value.status, caught.value.type, caught.value.title) == (502, "about:blank", "Bad Gateway")
    assert str(caught.value) == "502 Bad Gateway: <h1>Bad gateway</h1> (about:blank)"
