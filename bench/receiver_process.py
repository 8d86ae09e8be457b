"""The webhook receiver (bench/receiver.py) served as its own process, for thousands of deliveries a second.

In the benchmark's process the receiver would share one event loop (and one core) with the clients
it is compared against; here it gets its own, and both the worker's deliveries and the plain httpx
ceiling hit this same process. Besides receiving, it answers `GET /count` (how many distinct
requests have arrived) and `GET /arrivals` (request id -> wall-clock arrival time).

Run as `python -m bench.receiver_process` with BENCH_PORT set.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bench.receiver import Receiver
from bench.serve import serve_on_bench_port


class ReceiverApp:
    """Receiver, plus GET endpoints that report what it received."""

    def __init__(self) -> None:
        self.receiver = Receiver()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.receiver(scope, receive, send)
            return
        arrivals = self.receiver.arrivals
        body = msgspec.json.encode(arrivals if scope["path"] == "/arrivals" else len(arrivals))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    """Serve on 127.0.0.1:$BENCH_PORT until SIGINT/SIGTERM."""
    serve_on_bench_port(ReceiverApp(), lifespan="off", backlog=4096)


if __name__ == "__main__":
    main()
