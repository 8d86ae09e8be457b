"""Readiness names the dependency that is down; Redis down is degraded, not unready."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx

from ackflow import devstack
from ackflow.roles import run_gateway
from ackflow.settings import Settings
from ackflow.tenants import create_tenant
from tests.conftest import migrate_database
from tests.helpers import assert_eventually, assert_problem


@contextlib.asynccontextmanager
async def gateway(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A real gateway that opens its own Postgres pool and Redis client from `settings`."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_gateway(settings, stop))
    await assert_eventually(lambda: _port_open(settings.http_port), timeout=10, message="gateway did not bind")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}", timeout=10) as http:
            yield http
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def _port_open(port: int) -> bool:
    return devstack.port_open(port)


async def test_ready_when_postgres_and_redis_are_up(settings: Settings) -> None:
    async with gateway(settings) as http:
        assert (await http.get("/health/live")).json()["status"] == "ok"
        ready = await http.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}


async def test_redis_down_is_reported_degraded_but_still_ready(settings: Settings) -> None:
    no_redis = replace(settings, redis_url=devstack.redis_url(devstack.free_port()))
    async with gateway(no_redis) as http:
        ready = await http.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded" and ready.json()["checks"]["redis"] == "degraded"


async def test_postgres_down_makes_the_gateway_unready_naming_postgres(server_dir: Path, settings: Settings) -> None:
    port = devstack.free_port()
    server = devstack.start_postgres(server_dir, port, fast_unsafe=True)
    try:
        server.wait_until_ready()
        url = devstack.postgres_url(port, "postgres")
        await migrate_database(url)
        connection = await asyncpg.connect(url)
        try:
            key = (await create_tenant(connection, "acme")).key
        finally:
            await connection.close()
        own_postgres = replace(settings, database_url=url, connect_timeout_seconds=2, auth_cache_seconds=60)
        async with gateway(own_postgres) as http:
            headers = {"Authorization": f"Bearer {key}"}
            assert (await http.get("/health/ready")).status_code == 200
            assert (await http.get("/v1/requests", headers=headers)).status_code == 200
            server.stop()
            body = assert_problem(await http.get("/health/ready"), 503)
            live = await http.get("/health/live")
            api = await http.get("/v1/requests", headers=headers)
            accept = await http.post("/v1/requests", headers=headers, json={"kind": "echo", "payload": {}})
    finally:
        server.stop()
    assert "Postgres" in body["detail"] and body["checks"]["postgres"] == "down"
    assert live.status_code == 200, "liveness does not depend on Postgres"
    for response in (api, accept):
        assert_problem(response, 503, "service-unavailable")
        assert response.headers["retry-after"]
