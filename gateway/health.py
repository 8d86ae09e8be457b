"""Liveness and readiness.

Readiness fails (503) only when Postgres is down: without it nothing can be accepted. Redis down
is reported as `degraded` but stays ready, because Redis is only the fast path for live updates;
taking gateways out of rotation for it would turn slower notifications into an outage.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from redis.asyncio import Redis

from gateway.problems import problem
from gateway.schemas import Health
from gateway.services import GatewayServices

CHECK_TIMEOUT_SECONDS = 2.0


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/live", summary="The process is up")
    async def live(self) -> Health:
        return Health(status="ok", checks={})

    @get("/ready", summary="Dependencies are reachable", responses=None)
    async def ready(self, services: NamedDependency[GatewayServices]) -> Response[Any]:
        postgres_ok, redis_ok = await asyncio.gather(_check_postgres(services.pool), _check_redis(services.redis))
        checks = {"postgres": "ok" if postgres_ok else "down", "redis": "ok" if redis_ok else "degraded"}
        if not postgres_ok:
            return problem(
                503,
                "not-ready",
                "Not ready",
                "Postgres is down (DATABASE_URL): requests cannot be accepted",
                headers={"Retry-After": "2"},
                checks=checks,
            )
        return Response(Health(status="ok" if redis_ok else "degraded", checks=checks))


async def _check_postgres(pool: asyncpg.Pool) -> bool:
    try:
        await asyncio.wait_for(pool.fetchval("SELECT 1"), CHECK_TIMEOUT_SECONDS)
    except Exception:
        return False
    return True


async def _check_redis(redis: Redis) -> bool:
    try:
        await asyncio.wait_for(redis.ping(), CHECK_TIMEOUT_SECONDS)
    except Exception:
        return False
    return True
