"""Opening and closing the connections a role needs: Postgres pool, Redis client, Temporal client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
from redis.asyncio import Redis

from ackflow.db.pool import create_pool, redact_url
from ackflow.settings import Settings

if TYPE_CHECKING:  # the gateway never talks to Temporal: it does not load its client (17 MiB)
    from temporalio.client import Client

log = logging.getLogger(__name__)


@dataclass
class Services:
    """The clients a role opened; asking for one it did not open is a programming error."""

    pool: asyncpg.Pool
    redis_client: Redis | None
    temporal_client: Client | None

    @property
    def redis(self) -> Redis:
        assert self.redis_client is not None, "open_services(redis=True) was not asked for Redis"
        return self.redis_client

    @property
    def temporal(self) -> Client:
        assert self.temporal_client is not None, "open_services(temporal=True) was not asked for Temporal"
        return self.temporal_client


async def warn_if_redis_unreachable(redis: Redis, settings: Settings) -> None:
    """Redis is only the fast path: say so in one line if it is down, and keep going."""
    try:
        await asyncio.wait_for(redis.ping(), 3)
    except Exception as exc:
        log.warning(
            "Redis at %s (REDIS_URL) is unreachable (%s): live updates fall back to Postgres until it is back",
            redact_url(settings.redis_url),
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )


def redis_client(settings: Settings) -> Redis:
    """A Redis client with short timeouts: Redis is a fast path and must never hang a caller."""
    return Redis.from_url(
        settings.redis_url or "redis://localhost:6379/0",
        socket_timeout=2,
        socket_connect_timeout=2,
        health_check_interval=30,
    )


@contextlib.asynccontextmanager
async def open_services(settings: Settings, *, redis: bool, temporal: bool) -> AsyncIterator[Services]:
    """Connect to what the role needs (failing with one line naming the variable), close it all after."""
    pool = await create_pool(
        settings.database_url, size=settings.db_pool_size, timeout=settings.connect_timeout_seconds
    )
    redis_connection = redis_client(settings) if redis else None
    try:
        if redis_connection is not None:
            await warn_if_redis_unreachable(redis_connection, settings)
        client = None
        if temporal:
            from ackflow.temporal import connect_temporal, ensure_search_attributes

            client = await connect_temporal(settings)
            await ensure_search_attributes(client)
        yield Services(pool=pool, redis_client=redis_connection, temporal_client=client)
    finally:
        if redis_connection is not None:
            await redis_connection.aclose()
        await pool.close()
