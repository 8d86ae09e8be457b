"""A real webhook receiver for tests: an HTTP server on loopback that records what it gets.

It answers from a script of responses (then 200), can hold requests open, and counts how many
requests it is serving at once, so tests can check retries, concurrency limits and signatures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from standardwebhooks import Webhook

from ackflow import devstack
from ackflow.roles import SignalFreeServer
from tests.helpers import assert_eventually


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str) -> Any:
        """The parsed body, if the signature verifies with `secret` (raises otherwise)."""
        return Webhook(secret).verify(self.body, self.headers)


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hold: asyncio.Event | None = None  # answer only once this is set
    body: bytes = b"ok"


class Receiver:
    """Records every request; answers with the queued replies, then 200."""

    def __init__(self) -> None:
        self.port = devstack.free_port()
        self.received: list[Received] = []
        self.replies: deque[Reply] = deque()
        self.in_flight = 0
        self.max_in_flight = 0
        self.arrived = asyncio.Event()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def reply_with(self, *replies: Reply | int) -> None:
        self.replies.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.headers.get("x-path") == path]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        headers["x-path"] = scope["path"]
        self.received.append(Received(headers, body, time.monotonic()))
        self.arrived.set()
        reply = self.replies.popleft() if self.replies else Reply()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if reply.hold is not None:
                await reply.hold.wait()
            response_headers = [(k.encode(), v.encode()) for k, v in reply.headers.items()]
            await send({"type": "http.response.start", "status": reply.status, "headers": response_headers})
            await send({"type": "http.response.body", "body": reply.body})
        finally:
            self.in_flight -= 1


async def read_body(receive: Any) -> bytes:
    """The whole body of an ASGI HTTP request."""
    body = b""
    while True:
        message: dict[str, Any] = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


@contextlib.asynccontextmanager
async def serving(app: Any, port: int) -> AsyncIterator[None]:
    """Serve the ASGI `app` on loopback `port` in this event loop until the block ends."""
    config = uvicorn.Config(app, host=devstack.LOOPBACK, port=port, log_level="warning", lifespan="off")
    server = SignalFreeServer(config)
    task = asyncio.create_task(server.serve())
    await assert_eventually(lambda: _started(server), timeout=10, message="receiver did not start")
    try:
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    async with serving(receiver, receiver.port):
        yield receiver


async def _started(server: uvicorn.Server) -> bool:
    return server.started
