"""Progress reports on every channel of the running stack: SSE, WebSocket, the client, webhooks, long polls."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import websockets
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow import devstack
from ackflow.client import AckflowClient
from ackflow.handlers import HandlerRegistry
from ackflow.settings import Settings
from tests.conftest import Tenant, api_client, running_roles
from tests.e2e.test_webhooks import register
from tests.helpers import SseEvent, assert_eventually, read_sse
from tests.receiver import Receiver

TEN_STEPS = [f"step {i}" for i in range(1, 11)]


async def submit_steps(http: httpx.AsyncClient, reports: int, gap: float) -> dict[str, Any]:
    response = await http.post("/v1/requests", json={"kind": "steps", "payload": {"reports": reports, "gap": gap}})
    assert response.status_code == 202, response.text
    return dict(response.json())


def progress_messages(events: list[dict[str, Any]]) -> list[str]:
    return [event["data"]["progress"]["message"] for event in events if event["event"] == "request.progress"]


def in_order_once(events: list[dict[str, Any]]) -> bool:
    versions = [event["data"]["version"] for event in events]
    return versions == sorted(set(versions))


async def sse(http: httpx.AsyncClient, request_id: str, **headers: str) -> list[dict[str, Any]]:
    async with http.stream("GET", f"/v1/requests/{request_id}/events", headers=headers) as response:
        assert response.status_code == 200
        return [{"event": e.event, "id": e.id, "data": e.json()} for e in await read_sse(response)]


async def websocket(port: int, events_link: str) -> list[dict[str, Any]]:
    seen = []
    async with websockets.connect(f"ws://127.0.0.1:{port}{events_link.replace('/events?', '/ws?')}") as socket:
        async for raw in socket:
            message = json.loads(raw)
            if message["event"] != "ping":
                seen.append({"event": message["event"], "data": message["data"]})
    return seen


async def through_the_client(settings: Settings, api_key: str, request_id: str) -> list[dict[str, Any]]:
    async with AckflowClient(f"http://127.0.0.1:{settings.http_port}", api_key=api_key) as sdk:
        return [
            {"event": e.event, "data": {"version": e.state.version, "progress": _client_progress(e.state.progress)}}
            async for e in sdk.events(request_id)
        ]


def _client_progress(progress: Any) -> dict[str, Any] | None:
    return None if progress is None else {"message": progress.message, "fraction": progress.fraction}


async def test_ten_reports_reach_sse_websocket_the_client_and_a_webhook_in_order_once(
    http: httpx.AsyncClient, receiver: Receiver, settings: Settings, tenant: Tenant
) -> None:
    progress_hook = await register(http, receiver.url("/progress"), ["request.progress", "request.done"])
    everything = await register(http, receiver.url("/all"), ["request.*"])
    accepted = await submit_steps(http, 10, gap=0.3)  # further apart than the 0.25 s interval: none coalesced
    request_id = accepted["id"]

    channels = await asyncio.wait_for(
        asyncio.gather(
            sse(http, request_id),
            websocket(settings.http_port, accepted["links"]["events"]),
            through_the_client(settings, tenant.api_key, request_id),
        ),
        timeout=60,
    )
    for name, events in zip(("SSE", "WebSocket", "client"), channels, strict=True):
        assert progress_messages(events) == TEN_STEPS, name
        assert in_order_once(events), name
        assert events[-1]["event"] == "request.done", name
    fractions = [e["data"]["progress"]["fraction"] for e in channels[0] if e["event"] == "request.progress"]
    assert fractions == [i / 10 for i in range(1, 11)]

    await assert_eventually(lambda: _received(receiver, "/progress", 11), message="the webhook missed reports")
    bodies = sorted(
        (r.verify(progress_hook["secret"]) for r in receiver.at("/progress")), key=lambda b: b["data"]["version"]
    )
    assert [b["data"]["progress"]["message"] for b in bodies if b["type"] == "request.progress"] == TEN_STEPS
    assert len({r.headers["webhook-id"] for r in receiver.at("/progress")}) == 11
    await assert_eventually(lambda: _received(receiver, "/all", 2), message="request.* endpoint got too little")
    types = sorted(r.verify(everything["secret"])["type"] for r in receiver.at("/all"))
    assert types == ["request.done", "request.processing"], "request.* leaves out request.progress"

    state = (await http.get(f"/v1/requests/{request_id}")).json()
    assert state["progress"]["fraction"] == 1.0 and state["progress"]["partial"] == {"step": 10}
    assert state["result"] == {"steps": 10}


async def _received(receiver: Receiver, path: str, count: int) -> bool:
    return len(receiver.at(path)) >= count


async def test_a_stream_resumed_with_last_event_id_carries_each_report_once(http: httpx.AsyncClient) -> None:
    request_id = (await submit_steps(http, 10, gap=0.3))["id"]
    url = f"/v1/requests/{request_id}/events"

    def third_report(event: SseEvent) -> bool:
        return event.event == "request.progress" and event.json()["progress"]["message"] == "step 3"

    async with http.stream("GET", url) as response:
        first = await read_sse(response, until=third_report)
    rest = await sse(http, request_id, **{"Last-Event-ID": str(first[-1].id)})

    events = [{"event": e.event, "id": e.id, "data": e.json()} for e in first] + rest
    assert progress_messages(events) == TEN_STEPS
    assert in_order_once(events) and len({e["id"] for e in events}) == len(events)


async def test_a_long_poll_with_progress_answers_on_the_next_report_and_one_without_on_the_end(
    http: httpx.AsyncClient,
) -> None:
    request_id = (await submit_steps(http, 3, gap=1.0))["id"]
    state = (await http.get(f"/v1/requests/{request_id}")).json()
    changed = await http.get(f"/v1/requests/{request_id}", params={"wait": 30, "progress": "true"}, timeout=40)
    assert changed.status_code == 200
    assert changed.json()["version"] > state["version"]
    assert changed.json()["status"] != "DONE", "it answered on a change before the end"

    ended = await http.get(f"/v1/requests/{request_id}", params={"wait": 30}, timeout=40)
    assert ended.json()["status"] == "DONE" and ended.json()["progress"]["message"] == "step 3"


async def test_reports_reach_a_stream_once_across_a_redis_restart(
    settings: Settings,
    pool: asyncpg.Pool,
    temporal: Client,
    registry: HandlerRegistry,
    tenant: Tenant,
    server_dir: Path,
) -> None:
    port = devstack.free_port()
    redis_server = devstack.start_redis(server_dir, port)
    redis_server.wait_until_ready()
    own = replace(settings, redis_url=devstack.redis_url(port), stream_poll_seconds=0.3)
    redis = Redis.from_url(own.redis_url, socket_timeout=2, socket_connect_timeout=1)
    try:
        async with running_roles(own, pool, redis, temporal, registry), api_client(own, tenant.api_key) as http:
            request_id = (await submit_steps(http, 10, gap=0.4))["id"]
            stream = asyncio.create_task(sse(http, request_id))
            await assert_eventually(lambda: _reported(pool, request_id, 3), message="no reports before the restart")
            redis_server.stop()
            await assert_eventually(lambda: _reported(pool, request_id, 6), message="no reports while Redis was down")
            redis_server = devstack.start_redis(server_dir, port)
            redis_server.wait_until_ready()
            events = await asyncio.wait_for(stream, timeout=60)
        assert progress_messages(events) == TEN_STEPS
        assert in_order_once(events) and events[-1]["event"] == "request.done"
    finally:
        await redis.aclose()
        redis_server.stop()


async def _reported(pool: asyncpg.Pool, request_id: str, count: int) -> bool:
    written = await pool.fetchval(
        "SELECT count(*) FROM request_events WHERE request_id = $1::uuid AND topic = 'request.progress'", request_id
    )
    return int(written) >= count
