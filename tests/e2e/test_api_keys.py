"""API keys from the CLI: created, listed, and revoked on every gateway at once."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace
from pathlib import Path

import asyncpg
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow.handlers import HandlerRegistry
from ackflow.settings import Settings
from tests.conftest import Tenant, api_client, running_roles
from tests.helpers import assert_eventually

ACKFLOW = str(Path(sys.executable).parent / "ackflow")


async def ackflow(settings: Settings, *args: str) -> str:
    env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    process = await asyncio.create_subprocess_exec(
        ACKFLOW, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_a_revoked_key_stops_working_at_once_despite_the_gateways_cache(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    cached_long = replace(settings, auth_cache_seconds=300)  # only the announcement can make it immediate
    key = (await ackflow(cached_long, "key", "create", "acme")).strip().split()[-1]
    prefix = key.split("_")[1]

    async with running_roles(cached_long, pool, redis, temporal, registry), api_client(cached_long, key) as http:
        assert (await http.get("/v1/requests")).status_code == 200  # now cached by the gateway
        said = await ackflow(cached_long, "key", "revoke", "acme", key)
        assert "every gateway now" in said and key not in said

        async def refused() -> bool:
            return (await http.get("/v1/requests")).status_code == 401

        await assert_eventually(refused, timeout=5, message="the revoked key kept working")
        async with api_client(cached_long, tenant.api_key) as other_key:
            assert (await other_key.get("/v1/requests")).status_code == 200, "other keys are untouched"

    listing = await ackflow(cached_long, "key", "list", "acme")
    assert f"ak_{prefix}_" in listing and "revoked" in listing and key not in listing
    assert listing.count("active") == 1
