"""What a WebSocket client sends is bounded and ignored: it can neither fill the gateway's buffers nor stop its events.

Clients have nothing to say on `/v1/requests/{id}/ws`. The gateway reads every message and drops
it; a message over ACKFLOW_WS_MAX_MESSAGE_BYTES closes that socket with 1009 (message too big),
and no compression is negotiated (its inflate buffers would be the client's to size).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from ackflow.settings import Settings

pytestmark = pytest.mark.usefixtures("no_gateway_errors_logged")


async def submit(client: httpx.AsyncClient, seconds: float) -> dict[str, Any]:
    response = await client.post("/v1/requests", json={"kind": "sleep", "payload": {"seconds": seconds}})
    assert response.status_code == 202, response.text
    return dict(response.json())


def socket_url(settings: Settings, accepted: dict[str, Any]) -> str:
    return f"ws://127.0.0.1:{settings.http_port}{accepted['links']['events'].replace('/events?', '/ws?')}"


async def events_until_closed(socket: ClientConnection) -> list[str]:
    """The event names received (pings left out) until the server closes the socket, however it closes it."""
    events = []
    with contextlib.suppress(websockets.ConnectionClosedError):  # a close other than 1000/1001
        async for raw in socket:
            event = json.loads(raw)["event"]
            if event != "ping":
                events.append(event)
    return events


async def test_a_message_over_the_limit_closes_that_socket_with_1009_and_the_gateway_serves_others(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    accepted = await submit(client, 1.5)
    url = socket_url(settings, accepted)

    async with websockets.connect(url) as polite, websockets.connect(url) as hostile:
        await hostile.send("x" * (settings.ws_max_message_bytes + 1))
        async with asyncio.timeout(5):
            await events_until_closed(hostile)
        assert hostile.close_code == 1009, (hostile.close_code, hostile.close_reason)

        async with asyncio.timeout(20):
            events = await events_until_closed(polite)
        assert events == ["request.accepted", "request.processing", "request.done"]
        assert polite.close_code == 1000

    assert (await client.get(f"/v1/requests/{accepted['id']}")).json()["status"] == "DONE"
    async with websockets.connect(socket_url(settings, await submit(client, 0.1))) as later:
        assert (await events_until_closed(later))[-1] == "request.done"


async def test_messages_under_the_limit_are_read_and_ignored_while_events_keep_arriving(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    accepted = await submit(client, 3)
    message = "y" * settings.ws_max_message_bytes

    # Uncompressed, so that the bytes sent are the bytes the gateway has to take in.
    async with websockets.connect(socket_url(settings, accepted), compression=None) as socket:
        # 32 MB: far more than the socket buffers hold, so sending it all means the gateway read it all.
        async with asyncio.timeout(10):
            for _ in range(32 * 1024 * 1024 // len(message)):
                await socket.send(message)
        async with asyncio.timeout(20):
            events = await events_until_closed(socket)

    assert events == ["request.accepted", "request.processing", "request.done"]
    assert socket.close_code == 1000


async def test_the_gateway_does_not_negotiate_per_message_compression(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    accepted = await submit(client, 0.1)

    async with websockets.connect(socket_url(settings, accepted), compression="deflate") as socket:
        assert socket.request is not None and socket.response is not None
        assert "permessage-deflate" in socket.request.headers["Sec-WebSocket-Extensions"]  # offered
        assert socket.response.headers.get("Sec-WebSocket-Extensions") is None  # and declined
        assert (await events_until_closed(socket))[-1] == "request.done"
