"""Live results: SSE, long polling and WebSocket see every status change, in order, once."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import websockets

from ackflow.settings import Settings
from tests.conftest import Tenant, api_client
from tests.helpers import assert_problem, read_sse, wait_for_status


async def submit(client: httpx.AsyncClient, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/requests", json={"kind": kind, "payload": payload})
    assert response.status_code == 202, response.text
    return dict(response.json())


async def test_sse_delivers_init_processing_done_in_order_then_ends(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, "sleep", {"seconds": 0.5})

    async with client.stream("GET", f"/v1/requests/{accepted['id']}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = await read_sse(response)  # the server ends the stream after the terminal event

    assert [e.event for e in events] == ["request.accepted", "request.processing", "request.done"]
    assert [e.json()["status"] for e in events] == ["INIT", "PROCESSING", "DONE"]
    assert [e.json()["version"] for e in events] == [1, 2, 3]
    ids = [int(e.id or 0) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert events[-1].json()["result"] == {"slept": 0.5}


async def test_reconnecting_with_last_event_id_receives_exactly_the_missed_events(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, "sleep", {"seconds": 0.5})
    url = f"/v1/requests/{accepted['id']}/events"
    async with client.stream("GET", url) as response:
        [first] = await read_sse(response, until=lambda e: True)
    assert first.event == "request.accepted"
    await wait_for_status(client, accepted["id"], {"DONE"})

    async with client.stream("GET", url, headers={"Last-Event-ID": str(first.id)}) as response:
        missed = await read_sse(response)
    async with client.stream("GET", url, params={"last_event_id": first.id}) as response:
        missed_by_query = await read_sse(response)

    assert [e.event for e in missed] == ["request.processing", "request.done"]
    assert [e.id for e in missed_by_query] == [e.id for e in missed]
    finished = await client.get(url, headers={"Last-Event-ID": str(missed[-1].id)})
    assert finished.status_code == 204, "after the terminal event EventSource must be told to stop"


async def test_thousand_concurrent_sse_clients_on_one_request_all_receive_done(
    client: httpx.AsyncClient, settings: Settings, tenant: Tenant
) -> None:
    accepted = await submit(client, "sleep", {"seconds": 3})
    url = f"http://127.0.0.1:{settings.http_port}/v1/requests/{accepted['id']}/events"
    limits = httpx.Limits(max_connections=1100, max_keepalive_connections=0)
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    connected = 0

    async def watch(http: httpx.AsyncClient) -> list[str]:
        nonlocal connected
        async with http.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200
            connected += 1
            return [str(e.event) for e in await read_sse(response)]

    async with httpx.AsyncClient(limits=limits, timeout=120) as http:
        results = await asyncio.wait_for(asyncio.gather(*(watch(http) for _ in range(1000))), timeout=180)

    assert connected == 1000
    assert all(events[-1] == "request.done" for events in results)
    assert all(events.count("request.done") == 1 for events in results)


async def test_tenant_stream_carries_only_its_own_requests_filtered_by_kind(
    client: httpx.AsyncClient, settings: Settings, other_tenant: Tenant
) -> None:
    async with client.stream("GET", "/v1/events", params={"kind": "echo"}) as response:
        assert response.status_code == 200
        async with api_client(settings, other_tenant.api_key) as other:
            await submit(other, "echo", {"tenant": "other"})
        await submit(client, "fail", {})
        mine = await submit(client, "echo", {"tenant": "mine"})
        events = await asyncio.wait_for(read_sse(response, until=lambda e: e.event == "request.done"), timeout=30)
    assert {e.json()["id"] for e in events} == {mine["id"]}
    assert events[-1].json()["result"] == {"tenant": "mine"}


async def test_long_poll_returns_as_soon_as_the_request_is_done(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, "sleep", {"seconds": 1})
    started = time.monotonic()

    response = await client.get(f"/v1/requests/{accepted['id']}", params={"wait": 30}, timeout=40)

    assert response.status_code == 200 and response.json()["status"] == "DONE"
    assert time.monotonic() - started < 25, "a long poll must not sit out its whole wait once DONE"
    assert "retry-after" not in response.headers


async def test_long_poll_times_out_with_the_pending_state(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, "sleep", {"seconds": 30})
    started = time.monotonic()

    response = await client.get(f"/v1/requests/{accepted['id']}", headers={"Prefer": "wait=1"})

    assert time.monotonic() - started >= 1
    assert response.json()["status"] in {"INIT", "PROCESSING"}
    assert response.headers["retry-after"] == "1"
    assert response.headers["preference-applied"] == "wait=1"
    await client.post(f"/v1/requests/{accepted['id']}/cancel")


async def test_long_poll_longer_than_a_minute_is_refused(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, "echo", {})
    assert_problem(await client.get(f"/v1/requests/{accepted['id']}", params={"wait": 61}), 400)


async def test_websocket_receives_the_same_sequence_then_a_normal_close(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    accepted = await submit(client, "sleep", {"seconds": 0.5})
    url = f"ws://127.0.0.1:{settings.http_port}{accepted['links']['events'].replace('/events?', '/ws?')}"

    messages = []
    async with websockets.connect(url) as socket:
        async for raw in socket:
            message = json.loads(raw)
            if message["event"] != "ping":
                messages.append(message)
        close_code = socket.close_code

    assert [m["event"] for m in messages] == ["request.accepted", "request.processing", "request.done"]
    assert [m["data"]["status"] for m in messages] == ["INIT", "PROCESSING", "DONE"]
    assert close_code == 1000


async def test_capability_token_opens_its_own_request_only(client: httpx.AsyncClient, settings: Settings) -> None:
    first = await submit(client, "echo", {"n": 1})
    second = await submit(client, "echo", {"n": 2})
    first_token = first["links"]["events"].split("token=")[1]
    await wait_for_status(client, second["id"], {"DONE"})

    async with api_client(settings, None) as anonymous:
        async with anonymous.stream("GET", first["links"]["events"]) as response:
            assert response.status_code == 200
            assert [e.event for e in await read_sse(response)][-1] == "request.done"
        foreign = await anonymous.get(f"/v1/requests/{second['id']}/events", params={"token": first_token})
        assert_problem(foreign, 401, "unauthorized")
        assert_problem(await anonymous.get(f"/v1/requests/{first['id']}", params={"token": first_token}), 401)
        forged = first_token[:-4] + ("AAAA" if not first_token.endswith("AAAA") else "BBBB")
        assert_problem(await anonymous.get(f"/v1/requests/{first['id']}/events", params={"token": forged}), 401)
    ws_url = f"ws://127.0.0.1:{settings.http_port}/v1/requests/{second['id']}/ws?token={first_token}"
    try:
        async with websockets.connect(ws_url) as socket:
            await socket.recv()
        raise AssertionError("a WebSocket opened with another request's token")
    except websockets.InvalidStatus as refused:
        assert refused.response.status_code in {401, 403}
