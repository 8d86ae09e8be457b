"""Scenario "fan-out": N idle SSE clients on one gateway; its memory per client, and DONE -> all N.

All N clients follow ONE request's stream (`/v1/requests/{id}/events`) while the relay is stopped,
so the request stays accepted and the streams stay idle; the gateway's RSS is read from /proc
before and with all N connected. Then the relay starts, the request runs to DONE, and each client
notes the wall-clock time it read the `request.done` event; latency runs from
`requests.completed_at` (the DONE transaction's start) to that time. Each size gets a freshly
started gateway, so memory a previous round freed (but Python kept) does not flatter the next.

The clients are asyncio protocols over raw sockets, a few hundred bytes each, so that 10,000 of
them cost the benchmark's process little CPU beside the gateway it measures; they connect in
bounded batches so the gateway's accept backlog is never overrun.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from ackflow import devstack
from ackflow.contracts import DONE, TOPIC_FOR_STATUS
from bench.cpu import cpu_seconds
from bench.stack import Stack, wait_until_serving
from bench.stats import percentiles

CONNECT_BATCH = 200
CONNECT_TIMEOUT_SECONDS = 30.0
SETTLE_SECONDS = 1.0  # after the last connection, before reading RSS: let the gateway go idle
DONE_TIMEOUT_SECONDS = 60.0
DONE_MARKER = f"event: {TOPIC_FOR_STATUS[DONE]}".encode()


class SseClient(asyncio.Protocol):
    """One SSE connection: sends the GET, checks for 200, notes when the DONE event arrives."""

    def __init__(self, request: bytes, opened: asyncio.Future[None], on_done: Callable[[], None]) -> None:
        self._request = request
        self._opened = opened
        self._on_done = on_done
        self._head = b""
        self._tail = b""  # the end of the previous read, in case the marker is split across reads
        self.transport: asyncio.Transport | None = None
        self.done_at: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        at = time.time()
        if not self._opened.done():
            self._head += data
            if b"\r\n\r\n" not in self._head:
                return
            head, _, data = self._head.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                self._opened.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace")))
                return
            self._opened.set_result(None)
        if self.done_at is None:
            window = self._tail + data
            if DONE_MARKER in window:
                self.done_at = at
                self._on_done()
            self._tail = window[-len(DONE_MARKER) :]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._opened.done():
            self._opened.set_exception(exc or ConnectionError("closed before the response"))


class Audience:
    """N clients of one request's stream, and an event set when every connected one has read DONE."""

    def __init__(self, stack: Stack, request_id: str) -> None:
        self._host, self._port = devstack.LOOPBACK, stack.gateway_port
        self._request = (
            f"GET /v1/requests/{request_id}/events HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            f"Authorization: Bearer {stack.api_key}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        self.clients: list[SseClient] = []
        self.failed: list[str] = []
        self._received = 0
        self.all_received = asyncio.Event()

    async def connect(self, count: int) -> None:
        """Open `count` streams, CONNECT_BATCH at a time; failures are counted, not raised."""
        for start in range(0, count, CONNECT_BATCH):
            await asyncio.gather(*(self._connect_one() for _ in range(min(CONNECT_BATCH, count - start))))

    async def _connect_one(self) -> None:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()
        client: SseClient | None = None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                _, client = await loop.create_connection(
                    lambda: SseClient(self._request, opened, self._one_received), self._host, self._port
                )
                await opened
        except (OSError, TimeoutError) as exc:
            self.failed.append(f"{type(exc).__name__}: {exc}")
            if client is not None and client.transport is not None:
                client.transport.close()
            return
        self.clients.append(client)

    def _one_received(self) -> None:
        self._received += 1
        if self._received >= len(self.clients):
            self.all_received.set()

    def close(self) -> None:
        for client in self.clients:
            if client.transport is not None:
                client.transport.close()


def rss_kib(pid: int) -> int:
    """The process's resident set size (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def raise_fd_limit() -> None:
    """Each client is a socket here and in the gateway (which inherits this limit when restarted)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def measure_fanout(stack: Stack, sizes: tuple[int, ...], log: Callable[[str], None]) -> dict[str, Any]:
    """For each N: gateway RSS per idle SSE client, and DONE -> every client's read of it."""
    raise_fd_limit()
    result: dict[str, Any] = {"fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0], "rounds": []}
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
    try:
        for size in sizes:
            result["rounds"].append(await _round(stack, pool, size, log))
    finally:
        await pool.close()
        stack.ensure_role("relay")  # later scenarios expect it running
    return result


async def _round(stack: Stack, pool: asyncpg.Pool, size: int, log: Callable[[str], None]) -> dict[str, Any]:
    stack.stop("relay")  # the request stays accepted, and the streams idle, until every client is in
    stack.stop("gateway")
    stack.start_role("gateway")
    await wait_until_serving(stack)
    request_id = await _post_echo(stack)
    gateway = {"gateway": stack.pid("gateway")}
    before = rss_kib(gateway["gateway"])
    audience = Audience(stack, request_id)
    clock, cpu_at_start = time.monotonic(), cpu_seconds(gateway)
    try:
        await audience.connect(size)
        connect_seconds, cpu_connected = time.monotonic() - clock, cpu_seconds(gateway)
        await asyncio.sleep(SETTLE_SECONDS)
        connected = rss_kib(gateway["gateway"])
        cpu_idle = cpu_seconds(gateway)
        stack.ensure_role("relay")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(audience.all_received.wait(), DONE_TIMEOUT_SECONDS)
        cpu_done = cpu_seconds(gateway)
        completed_at = await pool.fetchval(
            "SELECT extract(epoch FROM completed_at)::float8 FROM requests WHERE id = $1::uuid", request_id
        )
    finally:
        audience.close()
    delays = [c.done_at - completed_at for c in audience.clients if c.done_at is not None and completed_at]
    latency = percentiles(delays)
    clients = len(audience.clients)
    per_client = (connected - before) / clients if clients else None
    # Gateway CPU per client: to connect one, and to pass it the live events (PROCESSING, then DONE).
    connect_us = _per(cpu_connected["gateway"] - cpu_at_start["gateway"], clients)
    fanout_us = _per(cpu_done["gateway"] - cpu_idle["gateway"], len(delays))
    log(
        f"  {size} clients: {clients} connected in {connect_seconds:.1f}s, {len(audience.failed)} failed;"
        f" gateway RSS {before / 1024:.0f} -> {connected / 1024:.0f} MiB"
        f" ({_num(per_client)} KiB/client); DONE -> all: {latency} ({len(delays)} received);"
        f" gateway CPU per client: {_num(connect_us)} us to connect, {_num(fanout_us)} us for PROCESSING + DONE"
    )
    return {
        "clients": size,
        "connected": clients,
        "failed": len(audience.failed),
        "failures": sorted(set(audience.failed))[:5],
        "connect_seconds": round(connect_seconds, 1),
        "rss_before_mib": round(before / 1024, 1),
        "rss_connected_mib": round(connected / 1024, 1),
        "kib_per_client": None if per_client is None else round(per_client, 1),
        "received": len(delays),
        "latency_ms": latency.as_dict(),
        "gateway_cpu_us_per_client": {"connect": _round1(connect_us), "processing_and_done": _round1(fanout_us)},
    }


async def _post_echo(stack: Stack) -> str:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, trust_env=False) as http:
        response = await http.post("/v1/requests", json={"kind": "echo", "payload": {"fanout": True}})
        response.raise_for_status()
        return str(response.json()["id"])


def _per(cpu_seconds_spent: float, clients: int) -> float | None:
    """Microseconds of CPU per client."""
    return cpu_seconds_spent * 1e6 / clients if clients else None


def _round1(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"
