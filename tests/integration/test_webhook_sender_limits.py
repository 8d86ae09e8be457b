"""A partner cannot make the webhook sender hold more than it allows: bytes, time, connection pools.

Each partner here is a real HTTP server on loopback, written on asyncio streams so that it can
misbehave as a server library would not let it: an endless body, an answer a byte at a time,
keep-alive connections left open.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from ackflow.webhook_secrets import new_webhook_secret
from callbacks import SplitTransport, WebhookSender
from tests.helpers import assert_eventually

HUGE_BODY_BYTES = 128 * 1024 * 1024
OK_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@dataclass
class Partner:
    """A loopback HTTP/1.1 server that answers every request with `answer`, counting what it does."""

    answer: Callable[[Partner, asyncio.StreamWriter], Awaitable[None]]
    port: int = 0
    open_connections: int = 0
    bytes_sent: int = 0
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.open_connections += 1
        try:
            while await _read_request(reader):
                await self.answer(self, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the sender closed the connection: what these tests expect it to do
        finally:
            self.open_connections -= 1
            writer.close()
            self.handlers.discard(task)


async def _read_request(reader: asyncio.StreamReader) -> bool:
    """Read one request (headers and a Content-Length body); False at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as eof:
        if eof.partial:
            raise
        return False
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    await reader.readexactly(int(length[1]) if length else 0)
    return True


@contextlib.asynccontextmanager
async def running_partner(answer: Callable[[Partner, asyncio.StreamWriter], Awaitable[None]]) -> AsyncIterator[Partner]:
    partner = Partner(answer)
    server = await asyncio.start_server(partner.serve, "127.0.0.1", 0)
    partner.port = server.sockets[0].getsockname()[1]
    try:
        yield partner
    finally:
        server.close()
        for task in list(partner.handlers):
            task.cancel()
        await asyncio.gather(*partner.handlers, return_exceptions=True)
        await server.wait_closed()


async def endless_body(partner: Partner, writer: asyncio.StreamWriter) -> None:
    """200, then 128 MiB of body as fast as the sender takes it."""
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % HUGE_BODY_BYTES)
    chunk = b"x" * 65536
    while partner.bytes_sent < HUGE_BODY_BYTES:
        writer.write(chunk)
        await writer.drain()
        partner.bytes_sent += len(chunk)


def trickle(answer: bytes, *, at_once: int) -> Callable[[Partner, asyncio.StreamWriter], Awaitable[None]]:
    """An answer whose first `at_once` bytes are sent at once, then one byte a second."""

    async def send(partner: Partner, writer: asyncio.StreamWriter) -> None:
        writer.write(answer[:at_once])
        for byte in answer[at_once:]:
            await writer.drain()
            await asyncio.sleep(1.0)
            writer.write(bytes([byte]))
            partner.bytes_sent += 1

    return send


async def answer_ok(partner: Partner, writer: asyncio.StreamWriter) -> None:
    writer.write(OK_ANSWER)
    await writer.drain()


async def test_a_huge_body_is_read_for_1_kib_only_and_its_connection_closed_not_drained() -> None:
    async with running_partner(endless_body) as partner, SplitTransport(4) as transport:
        sender = WebhookSender(transport, allow_private=True)
        started = time.monotonic()
        result = await sender.send(partner.url, "msg_huge", "{}", [new_webhook_secret()])
        elapsed = time.monotonic() - started

        assert result.succeeded, result
        assert result.response_body == "x" * 1024
        assert elapsed < 5, f"the attempt took {elapsed:.1f}s"
        await assert_eventually(
            lambda: _none_open(partner), timeout=5, message="the connection was kept open (or is being drained)"
        )
        assert partner.bytes_sent < 16 * 1024 * 1024, f"the sender took {partner.bytes_sent} bytes of the body"


@pytest.mark.parametrize(
    ("case", "at_once"),
    [("status line and headers trickled", 0), ("body trickled after a 200", len(b"HTTP/1.1 200 OK\r\n") + 22)],
)
async def test_an_answer_trickled_a_byte_a_second_is_cut_at_the_attempt_deadline(case: str, at_once: int) -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 40\r\n\r\n" + b"y" * 40
    async with running_partner(trickle(answer, at_once=at_once)) as partner, SplitTransport(4) as transport:
        sender = WebhookSender(transport, allow_private=True, deadline_seconds=2.5)
        started = time.monotonic()
        result = await asyncio.wait_for(sender.send(partner.url, "msg_slow", "{}", [new_webhook_secret()]), 30)
        elapsed = time.monotonic() - started

        assert result.status_code is None and not result.succeeded, (case, result)
        assert result.error == "timed out after 2.5s", (case, result)
        assert 2.4 < elapsed < 3.5, f"{case}: the attempt took {elapsed:.1f}s"
        await assert_eventually(lambda: _none_open(partner), timeout=5, message=f"{case}: connection left open")


async def test_many_tls_names_at_one_address_keep_the_pools_bounded_and_evicted_pools_closed() -> None:
    async with running_partner(answer_ok) as partner, SplitTransport(8, per_pool=4) as transport:
        for i in range(60):  # as the sender sends to 60 HTTPS hosts behind one address (a CDN, say)
            request = httpx.Request("POST", partner.url, content=b"{}", extensions={"sni_hostname": f"p{i}.example"})
            response = await transport.handle_async_request(request)
            await response.aread()
            await response.aclose()
            assert transport.pool_count <= 4, f"{transport.pool_count} pools after {i + 1} names"

        async def closed() -> bool:
            assert partner.open_connections <= 4, f"{partner.open_connections} connections open"
            return True

        await assert_eventually(closed, timeout=5, message="evicted pools kept their connections")


async def test_a_pool_with_a_response_still_open_is_never_evicted() -> None:
    async with running_partner(answer_ok) as partner, SplitTransport(4, per_pool=4, max_pools=2) as transport:
        held = await transport.handle_async_request(httpx.Request("POST", partner.url, content=b"{}"))
        for i in range(10):  # each new name forces an eviction: only the idle pool may go
            request = httpx.Request("POST", partner.url, content=b"{}", extensions={"sni_hostname": f"p{i}.example"})
            response = await transport.handle_async_request(request)
            await response.aread()
            await response.aclose()
            assert transport.pool_count <= 2

        assert await held.aread() == b"ok"
        await held.aclose()


async def _none_open(partner: Partner) -> bool:
    return partner.open_connections == 0
