"""Per-tenant limits: accepts over the rate are 429 with Retry-After; too many streams are 429."""

from __future__ import annotations

import asyncio
import math
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow.handlers import HandlerRegistry
from ackflow.settings import Settings
from tests.conftest import Tenant, api_client, running_roles
from tests.helpers import assert_eventually, assert_problem

ACKFLOW = str(Path(sys.executable).parent / "ackflow")


@pytest.fixture
async def limited(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> AsyncIterator[httpx.AsyncClient]:
    """The stack with a tenant limited to 2 accepts a second and 2 open streams per gateway."""
    own = replace(settings, max_streams_per_tenant=2, stream_keepalive_seconds=30)
    process = await asyncio.create_subprocess_exec(
        ACKFLOW,
        "tenant",
        "set-rate",
        "acme",
        "2",
        env={**os.environ, "DATABASE_URL": own.database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err
    async with running_roles(own, pool, redis, temporal, registry), api_client(own, tenant.api_key) as client:
        yield client


async def test_accepts_over_the_tenant_rate_are_429_with_retry_after_and_write_nothing(
    limited: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings, other_tenant: Tenant
) -> None:
    responses = [await limited.post("/v1/requests", json={"kind": "echo", "payload": {}}) for _ in range(12)]

    accepted = [r for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code == 429]
    assert len(accepted) + len(refused) == 12
    assert 4 <= len(accepted) < 12, "a burst of 2 seconds' worth, then refusals"
    for response in refused:
        assert_problem(response, 429, "too-many-requests")
        assert int(response.headers["retry-after"]) >= 1
    assert await pool.fetchval("SELECT count(*) FROM requests") == len(accepted)
    async with api_client(settings, other_tenant.api_key) as other:  # another tenant has its own bucket
        assert (await other.post("/v1/requests", json={"kind": "echo", "payload": {}})).status_code == 202
    await asyncio.sleep(math.ceil(float(refused[-1].headers["retry-after"])))  # as told: then it is accepted
    assert (await limited.post("/v1/requests", json={"kind": "echo", "payload": {}})).status_code == 202


async def test_a_third_stream_is_refused_while_two_are_open(limited: httpx.AsyncClient) -> None:
    request_id = (await limited.post("/v1/requests", json={"kind": "sleep", "payload": {"seconds": 30}})).json()["id"]
    url = f"/v1/requests/{request_id}/events"
    async with limited.stream("GET", url) as first, limited.stream("GET", url) as second:
        assert first.status_code == second.status_code == 200
        third = await limited.get(url)
        assert_problem(third, 429, "too-many-requests")
    async with limited.stream("GET", url) as after_closing:
        assert after_closing.status_code == 200, "closed streams free their slots"
    await limited.post(f"/v1/requests/{request_id}/cancel")


async def test_a_payload_nested_deeper_than_the_limit_is_422_and_writes_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(40):
        node["x"] = {}
        node = node["x"]  # type: ignore[assignment]
    shallow = {"a": [{"b": [1, 2, {"c": 3}]}]}

    refused = await client.post("/v1/requests", json={"kind": "echo", "payload": deep})
    accepted = await client.post("/v1/requests", json={"kind": "echo", "payload": shallow})

    body = assert_problem(refused, 422, "invalid-input")
    assert body["errors"][0]["field"] == "payload"
    assert accepted.status_code == 202
    assert await pool.fetchval("SELECT count(*) FROM requests") == 1


async def test_cors_allows_only_the_configured_origins(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    own = replace(settings, cors_origins=("https://app.example.com",))
    async with running_roles(own, pool, redis, temporal, registry, relay=False, worker=False):
        async with api_client(own, None) as http:
            preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
            allowed = await http.options("/v1/requests", headers={"Origin": "https://app.example.com", **preflight})
            other = await http.options("/v1/requests", headers={"Origin": "https://evil.example.net", **preflight})
    assert allowed.status_code == 204 and allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "access-control-allow-origin" not in other.headers


@pytest.fixture
async def bounded(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> AsyncIterator[tuple[Settings, httpx.AsyncClient]]:
    """The stack with at most 5 requests of a tenant waiting to start."""
    own = replace(settings, max_waiting_per_tenant=5)
    async with running_roles(own, pool, redis, temporal, registry), api_client(own, tenant.api_key) as client:
        yield own, client


async def test_accepts_past_the_tenants_queue_depth_are_429_until_some_have_started(
    bounded: tuple[Settings, httpx.AsyncClient], pool: asyncpg.Pool, other_tenant: Tenant
) -> None:
    own, client = bounded
    later = {"kind": "echo", "payload": {}, "delay_seconds": 600}
    waiting = [(await client.post("/v1/requests", json=later)).json()["id"] for _ in range(5)]

    refused = await client.post("/v1/requests", json=later)
    refused_batch = await client.post("/v1/requests/batch", json={"items": [later]})

    for response in (refused, refused_batch):
        problem = assert_problem(response, 429, "too-many-requests")
        assert "waiting to start" in problem["detail"] and int(response.headers["retry-after"]) >= 1
    assert await pool.fetchval("SELECT count(*) FROM requests") == 5
    async with api_client(own, other_tenant.api_key) as other:  # another tenant's queue is its own
        assert (await other.post("/v1/requests", json=later)).status_code == 202
    for request_id in waiting[:2]:
        assert (await client.post(f"/v1/requests/{request_id}/cancel")).status_code == 202

    async def accepted_again() -> bool:
        return (await client.post("/v1/requests", json=later)).status_code == 202

    await assert_eventually(accepted_again, timeout=30, message="accepts stayed refused with room in the queue")
