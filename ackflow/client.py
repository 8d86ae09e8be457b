"""A Python client of the ackflow HTTP API (v1): submit, read, wait for, follow, cancel and list requests.

::

    async with AckflowClient("http://127.0.0.1:8000", api_key="ak_...") as client:
        accepted = await client.submit("echo", {"hello": "world"})
        final = await client.wait(accepted.id, timeout=300)

`wait()` follows the request's Server-Sent Events and falls back to long polling (`?wait=`) when
the stream cannot be had (a proxy that buffers or blocks it). `events()` resumes a dropped stream
with `Last-Event-ID`, so no event is repeated or skipped. Results are msgspec Structs that ignore
fields they do not know, so a newer gateway does not break an older client.

Errors::

    AckflowError (ackflow.errors)
    ├── ApiError             the API answered 4xx/5xx: status, type, title, detail, errors (RFC 9457)
    ├── StreamUnavailable    events() gave up after consecutive failed reconnects (cause chained)
    └── WaitTimeout          wait() ran out of time; also a TimeoutError

Connection failures are not wrapped: they propagate as `httpx.TransportError` subclasses
(`httpx.ConnectError`, `httpx.ReadTimeout`, ...). A body that is not the JSON the API documents
raises `msgspec.DecodeError` or `msgspec.ValidationError`. The API key is sent only in the
`Authorization` header; it never appears in a repr, an exception or a log line.

It needs only the base install (`pip install ackflow`): httpx, msgspec, the standard library and
the core's errors, contracts (statuses) and SSE parser, never a service package (an import contract in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from ackflow.contracts import MAX_WAIT_SECONDS, PROBLEM_MEDIA_TYPE, TERMINAL_STATUSES
from ackflow.errors import AckflowError
from ackflow.sse import EventStreamParser, SseMessage

log = logging.getLogger(__name__)

_DEFAULT_RECONNECT_SECONDS = 0.5  # until the server sends `retry:`
_MAX_BACKOFF_SECONDS = 30.0

RequestId = str | uuid.UUID
_T = TypeVar("_T")


class Links(msgspec.Struct, frozen=True):
    """Where a request lives: `self` (read it), `events` (its stream, a capability URL for browsers) and,
    while it waits for an input, `input` (a capability URL that delivers that input without the API key)."""

    self: str | None = None
    events: str | None = None
    input: str | None = None


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """The latest progress report of a running request: `fraction` done (0..1), `message`, `partial` result."""

    at: datetime
    fraction: float | None = None
    message: str | None = None
    partial: Any = None


class Waiting(msgspec.Struct, frozen=True, kw_only=True):
    """The outside input a running request waits for (deliver it with `send_input`), since when."""

    input: str
    since: datetime


class RequestState(msgspec.Struct, frozen=True, kw_only=True):
    """A request as the API reports it. Fields a response leaves out are None.

    `submit()` fills `links` and no payload or result; states from `events()` carry no `payload`.
    """

    id: str
    kind: str
    status: str
    version: int
    payload: Any = None
    result: Any = None
    error: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    workflow_id: str | None = None
    scheduled_for: datetime | None = None
    expires_at: datetime | None = None
    waiting_for: str | None = None  # INIT only: concurrency_key, schedule, admission or worker
    concurrency_key: str | None = None
    priority: int | None = None
    tags: list[str] | None = None
    progress: Progress | None = None
    waiting: Waiting | None = None
    links: Links | None = None

    @property
    def terminal(self) -> bool:
        """True once the request has ended (DONE, FAILED or CANCELLED): it will not change again."""
        return self.status in TERMINAL_STATUSES


class StreamEvent(msgspec.Struct, frozen=True):
    """One event of the request (a status change, a progress report): `id` is the SSE id (pass it as
    `last_event_id` to resume), `event` its topic."""

    id: str
    event: str
    state: RequestState


class RequestPage(msgspec.Struct, frozen=True):
    """One page of requests, newest first; pass `next_cursor` as `cursor` for the next one (None: last page)."""

    items: list[RequestState] = []
    next_cursor: str | None = None


class BatchAnswer(msgspec.Struct, frozen=True):
    """One item of a submitted batch, in order: the request it made (`replayed`: one its idempotency
    key made before), or the problem (RFC 9457 members) that refused it."""

    index: int
    request: RequestState | None = None
    problem: dict[str, Any] | None = None
    replayed: bool = False


class SubmittedBatch(msgspec.Struct, frozen=True):
    """The answer to `submit_batch`: every accepted item is committed."""

    id: str
    size: int
    accepted: int  # requests it made (not the replayed ones)
    replayed: int = 0
    items: list[BatchAnswer] = []


class BatchCounts(msgspec.Struct, frozen=True):
    """A submitted batch now: its requests counted by status."""

    id: str
    size: int
    accepted: int
    created_at: datetime
    counts: dict[str, int] = {}


class _Problem(msgspec.Struct):
    type: str = "about:blank"
    title: str | None = None
    status: int | None = None
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None
    running_requests: list[str] | None = None


class ApiError(AckflowError):
    """The API answered with an error status; the fields come from its problem+json body (RFC 9457).

    A body that is not a problem (say, a proxy's HTML page) gives type `about:blank`, the reason
    phrase as title and the start of the body as detail. `running_requests`: for a 409 under
    concurrency_policy skip, the ids of the requests holding the key.
    """

    def __init__(
        self,
        status: int,
        type: str,
        title: str,
        detail: str | None = None,
        *,
        errors: list[dict[str, Any]] | None = None,
        instance: str | None = None,
        running_requests: list[str] | None = None,
    ) -> None:
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.instance = instance
        self.running_requests = running_requests or []
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.status} {self.title}" + (f": {self.detail}" if self.detail else "")
        fields = "; ".join(f"{e.get('field', '?')}: {e.get('message', '')}" for e in self.errors)
        return text + (f" [{fields}]" if fields else "") + f" ({self.type})"

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The error an error response stands for (its body must have been read)."""
        reason = response.reason_phrase or "HTTP error"
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        if media_type in (PROBLEM_MEDIA_TYPE, "application/json"):
            with contextlib.suppress(msgspec.MsgspecError):
                body = msgspec.json.decode(response.content, type=_Problem)
                status, title = response.status_code, body.title or reason
                return cls(
                    status,
                    body.type,
                    title,
                    body.detail,
                    errors=body.errors,
                    instance=body.instance,
                    running_requests=body.running_requests,
                )
        detail = response.text.strip()[:200] or None
        return cls(response.status_code, "about:blank", reason, detail)


class StreamUnavailable(AckflowError):
    """The event stream of a request failed `attempts` times in a row; the last failure is the cause."""

    def __init__(self, request_id: str, attempts: int, reason: str) -> None:
        super().__init__(f"the event stream of request {request_id} failed {attempts} times in a row: {reason}")
        self.request_id = request_id
        self.attempts = attempts


class WaitTimeout(AckflowError, TimeoutError):
    """`wait()` gave up: the request had not ended within `timeout` seconds. It keeps running."""

    def __init__(self, request_id: str, timeout: float, last_state: RequestState | None) -> None:
        status = last_state.status if last_state is not None else "unknown"
        super().__init__(f"request {request_id} did not end within {timeout:g} s (last status {status})")
        self.request_id = request_id
        self.timeout = timeout
        self.last_state = last_state


class AckflowClient:
    """An async client of one ackflow gateway, authenticated as one tenant; use it as a context manager.

    `timeout` bounds each ordinary call (long polls get their wait on top). A stream that sends
    nothing for `stream_idle_timeout` seconds is considered stalled (the gateway sends a keep-alive
    every 15 s); `stream_retries` consecutive failed reconnects end `events()` with StreamUnavailable.
    `transport` replaces httpx's (for proxies, retries at the connection level, or tests).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        timeout: float = 10.0,
        stream_idle_timeout: float = 45.0,
        stream_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self._timeout = timeout
        self._idle_timeout = stream_idle_timeout
        self._retries = stream_retries
        headers = {"Authorization": f"Bearer {api_key}", "User-Agent": "ackflow-python-client"}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, transport=transport)

    def __repr__(self) -> str:
        return f"AckflowClient({self.base_url!r})"

    async def __aenter__(self) -> AckflowClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def submit(
        self,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        wait: float | None = None,
        run_at: datetime | None = None,
        delay_seconds: float | None = None,
        expires_at: datetime | None = None,
        ttl_seconds: float | None = None,
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
        concurrency_policy: str | None = None,
        priority: int | None = None,
        tags: Sequence[str] | None = None,
    ) -> RequestState:
        """Submit a request; the answer (status INIT, with `links`) means it is committed and will run.

        `idempotency_key` is sent as the `Idempotency-Key` header: a submit retried with the same key
        (after a lost answer, say) gets the original request back instead of creating a second one.
        `wait` (seconds, at most 60) is sent as `Prefer: wait=N`: a request that ends by then comes
        back in its final state (`terminal`), one that does not in its accepted state, as without it.
        `run_at` (an aware datetime) or `delay_seconds`: start it no earlier than then (at most 30 days
        ahead); its state shows `scheduled_for`. `expires_at` or `ttl_seconds`: not started by then,
        it ends CANCELLED (error type Expired). `concurrency_key`: at most `concurrency_limit` (default
        the kind's, else 1) of the tenant's requests with the key run at once; `concurrency_policy`
        (queue, cancel_running, replace_queued, skip: ApiError 409 if the key is full) says what a new
        one does when it is full. `priority` 1 (first) .. 5 (default 3); `tags` to filter by.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        if wait is not None:
            headers["Prefer"] = f"wait={wait:g}"
        timeout = httpx.Timeout(self._timeout, read=self._timeout + (wait or 0))
        controls = {
            "run_at": None if run_at is None else run_at.isoformat(),
            "delay_seconds": delay_seconds,
            "expires_at": None if expires_at is None else expires_at.isoformat(),
            "ttl_seconds": ttl_seconds,
            "concurrency_key": concurrency_key,
            "concurrency_limit": concurrency_limit,
            "concurrency_policy": concurrency_policy,
            "priority": priority,
            "tags": None if tags is None else list(tags),
        }
        body: dict[str, Any] = {"kind": kind, "payload": dict(payload or {})}
        body.update({name: value for name, value in controls.items() if value is not None})
        response = await self._http.post("/v1/requests", json=body, headers=headers, timeout=timeout)
        return _decode(response, RequestState)

    async def submit_batch(self, items: Sequence[Mapping[str, Any]], *, atomic: bool = False) -> SubmittedBatch:
        """Submit up to 1,000 requests in one transaction: each item is a `submit` body (`kind`,
        `payload`, the controls, and an optional `idempotency_key` of its own). Bad items come back
        with their problem and the others are accepted, unless `atomic` (then ApiError 422 and
        nothing is accepted). The tenant's rate limit counts every item."""
        body = {"items": [dict(item) for item in items], "atomic": atomic}
        response = await self._http.post("/v1/requests/batch", json=body)
        return _decode(response, SubmittedBatch)

    async def get_batch(self, batch_id: RequestId) -> BatchCounts:
        """A submitted batch, its requests counted by status."""
        response = await self._http.get(f"/v1/batches/{batch_id}")
        return _decode(response, BatchCounts)

    async def get(self, request_id: RequestId, *, wait: float | None = None, progress: bool = False) -> RequestState:
        """The request's state now; with `wait` (seconds, at most 60), as soon as it ends (with
        `progress`, as soon as it changes: a progress report too) or after `wait`."""
        params: dict[str, Any] | None = None
        if wait is not None:
            params = {"wait": wait, "progress": "true"} if progress else {"wait": wait}
        timeout = httpx.Timeout(self._timeout, read=self._timeout + (wait or 0))
        response = await self._http.get(_path(request_id), params=params, timeout=timeout)
        return _decode(response, RequestState)

    async def cancel(self, request_id: RequestId) -> RequestState:
        """Ask for the request to be cancelled; returns its state then. ApiError 409 if it already ended."""
        response = await self._http.post(_path(request_id) + "/cancel")
        return _decode(response, RequestState)

    async def send_input(self, request_id: RequestId, name: str, value: Any) -> RequestState:
        """Deliver the input `name` (a JSON value) the request waits for (its state's `waiting`); returns
        its state then. ApiError 409 if it does not wait for that input (now), 413 if the value is too big."""
        response = await self._http.post(_path(request_id) + "/input", json={"name": name, "value": value})
        return _decode(response, RequestState)

    async def wait(self, request_id: RequestId, *, timeout: float | None = 300) -> RequestState:
        """Wait until the request ends and return its final state (FAILED and CANCELLED too; no raise).

        Follows the event stream, then reads the final state (with its payload); if the stream is
        unavailable or stalls, long-polls instead. Raises WaitTimeout after `timeout` seconds (None:
        no limit); the request itself is not cancelled.
        """
        progress = _Progress()
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                return await self._wait(str(request_id), progress)
        except TimeoutError:
            if scope.expired() and timeout is not None:
                raise WaitTimeout(str(request_id), timeout, progress.state) from None
            raise

    async def events(
        self, request_id: RequestId, *, last_event_id: str | int | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """The request's events in order, from the first (or after `last_event_id`), ending after the terminal one.

        A dropped connection is resumed with `Last-Event-ID` after the server's `retry` delay, with
        backoff. Stop early with `contextlib.aclosing(client.events(...))` to close the stream at once.
        """
        start = str(last_event_id) if last_event_id is not None else ""
        async with contextlib.aclosing(self._follow(str(request_id), start, stall_is_fatal=False)) as events:
            async for event in events:
                yield event

    async def list(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        tags: Sequence[str] | None = None,
        concurrency_key: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RequestPage:
        """One page of the tenant's requests, newest first, optionally filtered (`limit` at most 200;
        `tags`: those carrying all of them)."""
        query = {
            "status": status,
            "kind": kind,
            "tag": None if tags is None else list(tags),
            "concurrency_key": concurrency_key,
            "limit": limit,
            "cursor": cursor,
        }
        params = {name: value for name, value in query.items() if value is not None}
        response = await self._http.get("/v1/requests", params=params)
        return _decode(response, RequestPage)

    async def _wait(self, request_id: str, progress: _Progress) -> RequestState:
        try:
            async with contextlib.aclosing(self._follow(request_id, "", stall_is_fatal=True)) as events:
                async for event in events:
                    progress.state = event.state
                    if event.state.terminal:
                        break  # read the full state below (stream states carry no payload): one quick answer
        except (StreamUnavailable, ApiError) as exc:
            log.info("falling back to long polling for request %s: %s", request_id, exc)
        return await self._long_poll(request_id, progress)

    async def _long_poll(self, request_id: str, progress: _Progress) -> RequestState:
        failures = 0
        while True:
            try:
                state = await self.get(request_id, wait=MAX_WAIT_SECONDS)
            except Exception as exc:
                if not _retriable(exc) or failures >= self._retries:
                    raise
                failures += 1
                await asyncio.sleep(_backoff(failures, _DEFAULT_RECONNECT_SECONDS))
                continue
            failures = 0
            progress.state = state
            if state.terminal:
                return state

    async def _follow(
        self, request_id: str, last_event_id: str, *, stall_is_fatal: bool
    ) -> AsyncGenerator[StreamEvent, None]:
        """Events over as many connections as it takes; `stall_is_fatal` gives up at the first silent stream."""
        cursor = _Cursor(last_event_id)
        while True:
            failure: BaseException | None = None
            try:
                async with contextlib.aclosing(self._connect(request_id, cursor)) as events:
                    async for event in events:
                        yield event
                        if event.state.terminal:
                            return
                if cursor.finished:
                    return
            except _Stalled as exc:
                if stall_is_fatal:
                    raise StreamUnavailable(request_id, cursor.failures + 1, str(exc)) from exc
                failure = exc
            except Exception as exc:
                if not _retriable(exc):
                    raise
                failure = exc
            cursor.failures += 1
            reason = repr(failure) if failure is not None else "the server closed the stream early"
            if cursor.failures > self._retries:
                raise StreamUnavailable(request_id, cursor.failures, reason) from failure
            log.debug("reconnecting to the event stream of request %s: %s", request_id, reason)
            await asyncio.sleep(_backoff(cursor.failures, cursor.retry))

    async def _connect(self, request_id: str, cursor: _Cursor) -> AsyncGenerator[StreamEvent, None]:
        """One connection's events after the cursor's; sets `cursor.finished` on a 204 (nothing more will come)."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if cursor.last_event_id:
            headers["Last-Event-ID"] = cursor.last_event_id
        timeout = httpx.Timeout(self._timeout, read=None)  # silence is detected by _next_chunk
        async with self._http.stream("GET", _path(request_id) + "/events", headers=headers, timeout=timeout) as reply:
            if reply.status_code == 204:
                cursor.finished = True
                return
            await _check_stream(reply)
            parser = EventStreamParser(cursor.last_event_id)
            chunks = reply.aiter_bytes()
            try:
                while True:
                    chunk = await self._next_chunk(chunks)
                    for message in parser.feed(chunk or b"", final=chunk is None):
                        cursor.last_event_id = message.id
                        event = _stream_event(message)
                        if event is None or event.state.version <= cursor.version:
                            continue  # a keep-alive, an event type this client does not know, or one already given
                        cursor.version, cursor.failures = event.state.version, 0
                        yield event
                    cursor.last_event_id = parser.last_event_id  # an id-only block moves it too
                    cursor.retry = parser.retry if parser.retry is not None else cursor.retry
                    if chunk is None:
                        return
            finally:
                if isinstance(chunks, AsyncGenerator):
                    await chunks.aclose()

    async def _next_chunk(self, chunks: AsyncIterator[bytes]) -> bytes | None:
        """The next chunk of the body, None at its end; raises _Stalled if none comes within the idle timeout."""
        try:
            async with asyncio.timeout(self._idle_timeout):
                return await anext(chunks)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise _Stalled(f"nothing received for {self._idle_timeout:g} s (a buffering proxy?)") from None


@dataclass
class _Progress:
    state: RequestState | None = None


@dataclass
class _Cursor:
    """Where a stream is, across its connections."""

    last_event_id: str
    version: int = 0
    retry: float = _DEFAULT_RECONNECT_SECONDS
    failures: int = 0
    finished: bool = False


class _Stalled(Exception):
    """The stream went silent for longer than the server's keep-alive interval allows."""


class _NotAStream(Exception):
    """A 200 that is not an event stream (a proxy or captive portal answered)."""


def _stream_event(message: SseMessage) -> StreamEvent | None:
    """A request status event; None for event types this client does not know (keep-alives are `message`)."""
    if not message.event.startswith("request."):
        return None
    state = msgspec.json.decode(message.data, type=RequestState)
    return StreamEvent(id=message.id, event=message.event, state=state)


async def _check_stream(response: httpx.Response) -> None:
    """Raise unless the response is an event stream: ApiError for an error status, else _NotAStream."""
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    if response.status_code == 200 and media_type == "text/event-stream":
        return
    await response.aread()
    if response.is_error:
        raise ApiError.from_response(response)
    raise _NotAStream(f"{response.status_code} {media_type or 'without a content type'} instead of an event stream")


def _retriable(exc: BaseException) -> bool:
    """Worth another try: the connection failed, the server is busy or down, or a proxy got in the way."""
    if isinstance(exc, ApiError):
        return exc.status >= 500 or exc.status in (408, 429)
    return isinstance(exc, httpx.TransportError | _NotAStream | _Stalled)


def _backoff(failures: int, base: float) -> float:
    """Exponential backoff from `base` seconds, capped, with jitter so clients do not reconnect in step."""
    return min(_MAX_BACKOFF_SECONDS, base * 2.0 ** (failures - 1)) * random.uniform(0.5, 1.0)


def _path(request_id: RequestId) -> str:
    return "/v1/requests/" + quote(str(request_id), safe="")


def _decode(response: httpx.Response, into: type[_T]) -> _T:
    """The body of a successful response as `into`; ApiError for an error status."""
    if response.is_error:
        raise ApiError.from_response(response)
    return msgspec.json.decode(response.content, type=into)
