"""Opening and closing the connections a role needs: Postgres pool, Redis client, Temporal client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow.db.pool import create_pool
from ackflow.settings import Settings
from ackflow.temporal import connect_temporal, ensure_search_attributes


@dataclass
class Services:
    pool: asyncpg.Pool
    redis: Redis
    temporal: Client


def redis_client(settings: Settings) -> Redis:
    """A Redis client with short timeouts: Redis is a fast path and must never hang a caller."""
    return Redis.from_url(
        settings.redis_url or "redis://localhost:6379/0",
        socket_timeout=2,
        socket_connect_timeout=2,
        health_check_interval=30,
    )


@contextlib.asynccontextmanager
async def open_services(settings: Settings, *, temporal: bool) -> AsyncIterator[Services]:
    """Connect to what the role needs (failing with one line naming the variable), close it all after."""
    pool = await create_pool(
        settings.database_url, size=settings.db_pool_size, timeout=settings.connect_timeout_seconds
    )
    redis = redis_client(settings)
    try:
        client = await connect_temporal(settings) if temporal else None
        if client is not None:
            await ensure_search_attributes(client)
        yield Services(pool=pool, redis=redis, temporal=client)  # type: ignore[arg-type]
    finally:
        await redis.aclose()
        await pool.close()
