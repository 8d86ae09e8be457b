"""A webhook receiver for the benchmark: answers 200 at once and notes when each request's event came.

Served by uvicorn inside the benchmark process (it only has to keep up with a moderate rate).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import uvicorn

from ackflow import devstack
from ackflow.roles import SignalFreeServer


class Receiver:
    """ASGI app: request id (from the body's `data.id`) -> wall-clock time of the first delivery."""

    def __init__(self) -> None:
        self.port = devstack.free_port()
        self.arrivals: dict[str, float] = {}

    @property
    def url(self) -> str:
        return f"http://{devstack.LOOPBACK}:{self.port}/hook"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        at = time.time()
        with contextlib.suppress(msgspec.DecodeError, KeyError, TypeError):
            self.arrivals.setdefault(str(msgspec.json.decode(body)["data"]["id"]), at)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    """Serve a Receiver on a free loopback port for the duration of the block."""
    receiver = Receiver()
    config = uvicorn.Config(receiver, host=devstack.LOOPBACK, port=receiver.port, log_level="warning", lifespan="off")
    server = SignalFreeServer(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):  # up to 10 s
        if server.started:
            break
        await asyncio.sleep(0.05)
    try:
        yield receiver
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
