"""The per-tenant stream limit holds across gateways, forgets a crashed gateway's streams, fails open."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import replace

import asyncpg
import pytest
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow import devstack
from ackflow.errors import TooManyRequests
from ackflow.handlers import HandlerRegistry
from ackflow.settings import Settings
from gateway.open_streams import OpenStreams
from gateway.stream_limit import StreamLimit
from tests.conftest import Tenant, api_client, running_roles
from tests.helpers import assert_eventually, assert_problem


async def test_two_gateways_sharing_redis_hold_the_tenant_to_its_limit_together(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: Redis,
    temporal: Client,
    registry: HandlerRegistry,
    tenant: Tenant,
    other_tenant: Tenant,
) -> None:
    first = replace(settings, max_streams_per_tenant=2, stream_keepalive_seconds=30)
    second = replace(first, http_port=devstack.free_port())
    async with (
        running_roles(first, pool, redis, temporal, registry, relay=False, worker=False),
        running_roles(second, pool, redis, temporal, registry, relay=False, worker=False),
        api_client(first, tenant.api_key) as a,
        api_client(second, tenant.api_key) as b,
    ):
        async with a.stream("GET", "/v1/events") as on_a, b.stream("GET", "/v1/events") as on_b:
            assert on_a.status_code == on_b.status_code == 200
            assert_problem(await b.get("/v1/events"), 429, "too-many-requests")
            assert_problem(await a.get("/v1/events"), 429, "too-many-requests")
            async with api_client(second, other_tenant.api_key) as other:
                async with other.stream("GET", "/v1/events") as theirs:
                    assert theirs.status_code == 200, "another tenant has its own limit"

        async def opens_again() -> bool:  # the closed streams' leases are given back
            async with b.stream("GET", "/v1/events") as again:
                return again.status_code == 200

        await assert_eventually(opens_again, timeout=5, message="closed streams kept their slots")


async def test_the_streams_of_a_gateway_that_stops_refreshing_expire(redis: Redis) -> None:
    tenant_id = uuid.uuid4()
    crashed, alive = StreamLimit(redis, 2, lease_seconds=1), StreamLimit(redis, 2, lease_seconds=1)
    refreshing = asyncio.create_task(crashed.run())
    try:
        assert await crashed.acquire(tenant_id) and await crashed.acquire(tenant_id)
        deadline = time.monotonic() + 2.5  # over two lease lifetimes: refreshed leases keep counting
        while time.monotonic() < deadline:
            assert await alive.acquire(tenant_id) is None, "a live gateway's leases expired"
            await asyncio.sleep(0.2)  # how often it looks: what is proven is that nothing expires for 2.5 s
    finally:
        refreshing.cancel()  # the gateway "crashes": no refresh, no release
        with contextlib.suppress(asyncio.CancelledError):
            await refreshing

    async def taken() -> str | None:
        return await alive.acquire(tenant_id)

    await assert_eventually(taken, timeout=3, message="a crashed gateway's streams kept counting")


@pytest.fixture
async def unreachable_redis() -> Redis:
    return Redis(host="127.0.0.1", port=devstack.free_port(), socket_timeout=1, socket_connect_timeout=1)


async def test_with_redis_down_the_limit_fails_open_but_each_gateway_still_applies_it(
    pool: asyncpg.Pool, unreachable_redis: Redis, tenant: Tenant
) -> None:
    limit = StreamLimit(unreachable_redis, 2)
    assert await limit.acquire(tenant.id) is not None, "Redis is a fast path: down, it refuses nothing"
    # With the hub degraded (how a gateway knows Redis is down) the limit does not even try Redis.
    open_streams = OpenStreams(pool, StreamLimit(unreachable_redis, 2), lambda: False, max_per_tenant=2)
    leases = [await open_streams.open(tenant.id, uuid.uuid4()) for _ in range(2)]
    with pytest.raises(TooManyRequests):
        await open_streams.open(tenant.id, uuid.uuid4())
    leases[0].release()
    assert await open_streams.open(tenant.id, uuid.uuid4())
