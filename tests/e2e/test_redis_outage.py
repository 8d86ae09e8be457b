"""Redis is only the fast path: stopped under open streams, nothing is lost; back, live again."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow import devstack
from ackflow.handlers import HandlerRegistry
from ackflow.settings import Settings
from tests.conftest import Tenant, api_client, running_roles
from tests.helpers import SseEvent, assert_eventually, read_sse

# A stream subscribes to its request's channel before it reads what Postgres already has, so its
# first event proves it is subscribed.


async def watch_sse(http: httpx.AsyncClient, request_id: str, subscribed: asyncio.Event | None = None) -> list[str]:
    def seen(event: SseEvent) -> bool:
        if subscribed is not None:
            subscribed.set()
        return False  # read to the end

    async with http.stream("GET", f"/v1/requests/{request_id}/events") as response:
        assert response.status_code == 200
        return [str(e.event) for e in await read_sse(response, until=seen)]


async def watch_ws(port: int, events_link: str, subscribed: asyncio.Event) -> list[str]:
    import json

    import websockets

    seen = []
    async with websockets.connect(f"ws://127.0.0.1:{port}{events_link.replace('/events?', '/ws?')}") as socket:
        async for raw in socket:
            message = json.loads(raw)
            if message["event"] != "ping":
                seen.append(message["event"])
                subscribed.set()
    return seen


async def readiness(http: httpx.AsyncClient) -> dict[str, Any]:
    return dict((await http.get("/health/ready")).json())


async def test_streams_and_long_polls_finish_while_redis_is_down_and_go_live_when_it_returns(
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
            await assert_eventually(lambda: _ready_status(http, "ok"), message="hub never connected")
            accepted = (await http.post("/v1/requests", json={"kind": "sleep", "payload": {"seconds": 3}})).json()
            request_id = accepted["id"]
            # The long poll shows no outward sign of having subscribed: it is only known to be sent before
            # the streams, which have each subscribed by their first event. Subscribed before Redis
            # stops or after, it must end once the request is DONE.
            long_poll = asyncio.create_task(http.get(f"/v1/requests/{request_id}", params={"wait": 30}, timeout=40))
            subscribed = [asyncio.Event() for _ in range(6)]
            watchers = [asyncio.create_task(watch_sse(http, request_id, subscribed[n])) for n in range(5)]
            watchers.append(asyncio.create_task(watch_ws(own.http_port, accepted["links"]["events"], subscribed[5])))
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in subscribed)), timeout=10)
            assert not long_poll.done(), "the request ended before Redis stopped: nothing was proven"

            redis_server.stop()
            await assert_eventually(lambda: _ready_status(http, "degraded"), message="readiness never said degraded")
            results = await asyncio.wait_for(asyncio.gather(*watchers), timeout=30)
            polled = await asyncio.wait_for(long_poll, timeout=30)

            assert all(events == ["request.accepted", "request.processing", "request.done"] for events in results)
            assert polled.json()["status"] == "DONE"

            redis_server = devstack.start_redis(server_dir, port)
            redis_server.wait_until_ready()
            await assert_eventually(lambda: _ready_status(http, "ok"), timeout=20, message="hub never reconnected")
            again = (await http.post("/v1/requests", json={"kind": "sleep", "payload": {"seconds": 1}})).json()
            events = await asyncio.wait_for(watch_sse(http, again["id"]), timeout=30)
            assert events == ["request.accepted", "request.processing", "request.done"]
    finally:
        await redis.aclose()
        redis_server.stop()


async def _ready_status(http: httpx.AsyncClient, status: str) -> bool:
    return (await readiness(http))["status"] == status
