"""Helpers shared by the tests: waiting without bare sleeps, running roles, problem checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


async def assert_eventually(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 20.0, interval: float = 0.05, message: str = ""
) -> T:
    """Call `probe` until it returns a truthy value (returned) or raises no AssertionError; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = await probe()
            if value:
                return value
            last_error = None
        except AssertionError as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {message or last_error or 'probe returned falsy'}")
        await asyncio.sleep(interval)


async def wait_for_status(
    client: httpx.AsyncClient, request_id: str, statuses: set[str], *, timeout: float = 30.0
) -> dict[str, Any]:
    """Poll GET /v1/requests/{id} until its status is one of `statuses`; return the body."""

    async def probe() -> dict[str, Any] | None:
        response = await client.get(f"/v1/requests/{request_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body if body["status"] in statuses else None

    return await assert_eventually(probe, timeout=timeout, message=f"request {request_id} never reached {statuses}")


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status (and type slug)."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:ackflow:problem:")
    assert body["title"] and body["detail"]
    if slug is not None:
        assert body["type"] == f"urn:ackflow:problem:{slug}", body
    return body


class SseEvent:
    """One parsed Server-Sent Event."""

    def __init__(self, event_id: str | None, event: str | None, data: str) -> None:
        self.id = event_id
        self.event = event
        self.data = data

    def json(self) -> Any:
        import json

        return json.loads(self.data)

    def __repr__(self) -> str:
        return f"SseEvent(id={self.id!r}, event={self.event!r})"


async def read_sse(response: httpx.Response, *, until: Callable[[SseEvent], bool] | None = None) -> list[SseEvent]:
    """Parse an SSE response body (WHATWG rules) until it ends, or `until` holds for an event."""
    from ackflow.sse import EventStreamParser

    parser = EventStreamParser("")
    events: list[SseEvent] = []
    async for chunk in response.aiter_bytes():
        for message in parser.feed(chunk):
            events.append(SseEvent(message.id or None, message.event, message.data))
            if until is not None and until(events[-1]):
                return events
    return events
