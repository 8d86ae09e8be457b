"""/metrics on its own port (ACKFLOW_METRICS_HOST:ACKFLOW_METRICS_PORT), for any role.

A tiny ASGI app: prometheus-client's own (`make_asgi_app`, which also answers OpenMetrics and gzip
when asked), behind the bearer-token check and the scrape-time refresh. uvicorn runs it as a task in
the role's event loop, so the refreshers use the role's own pool and clients, and it stops with the
role. Anything but GET /metrics is a plain 404; without the token (when ACKFLOW_METRICS_TOKEN is
set) a plain 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from prometheus_client import make_asgi_app

from ackflow.errors import ConfigurationError
from ackflow.metrics.scrape import REFRESH, token_matches
from ackflow.settings import Settings

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
ASGIReceive = Any  # the ASGI callables, untyped as prometheus-client's own app is
ASGISend = Any


class MetricsApp:
    """GET /metrics: the token check, a refresh, then prometheus-client's exposition."""

    def __init__(self, token: str) -> None:
        self._token = token
        self._exposition = make_asgi_app()

    async def __call__(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] != "http":
            return  # lifespan is off; a WebSocket has nothing to open here
        if scope["path"] != METRICS_PATH or scope["method"] not in ("GET", "HEAD"):
            await _plain(send, 404, b"not found: metrics are at /metrics\n")
            return
        if self._token and not token_matches(_header(scope, b"authorization"), self._token):
            await _plain(send, 401, b"unauthorized: send Authorization: Bearer <ACKFLOW_METRICS_TOKEN>\n")
            return
        await REFRESH.refresh()
        await self._exposition(scope, receive, send)


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _plain(send: ASGISend, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="ackflow-metrics"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the role's runner owns signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving_metrics(settings: Settings) -> AsyncIterator[None]:
    """Serve /metrics on ACKFLOW_METRICS_HOST:PORT while the block runs (nothing if the port is unset).

    The socket is bound first, so a port that is taken is a ConfigurationError naming the variable
    before the role starts, not a log line while it runs."""
    if settings.metrics_port is None:
        yield
        return
    listening = _bind(settings.metrics_host, settings.metrics_port)
    config = uvicorn.Config(MetricsApp(settings.metrics_token), log_level="warning", access_log=False, lifespan="off")
    server = _QuietServer(config)
    serving = asyncio.create_task(server.serve(sockets=[listening]), name="metrics-server")
    log.info("metrics on http://%s:%d%s", settings.metrics_host, settings.metrics_port, METRICS_PATH)
    try:
        yield
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        listening.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        raise ConfigurationError(
            f"ACKFLOW_METRICS_PORT={port} on ACKFLOW_METRICS_HOST={host} cannot be bound ({exc.strerror}): "
            "pick a free port, or unset ACKFLOW_METRICS_PORT"
        ) from None
    listening.listen(128)
    listening.setblocking(False)
    return listening
