"""create_app(settings): the Litestar application, its dependencies and its error mapping."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from redis.asyncio import Redis

from ackflow.db.pool import create_pool
from ackflow.settings import Settings
from gateway.auth import ApiKeyAuthenticator
from gateway.bodies import JsonRequest
from gateway.health import HealthController
from gateway.problems import EXCEPTION_HANDLERS, not_found_page_as_problem
from gateway.requests_controller import RequestsController


def create_app(settings: Settings, *, pool: asyncpg.Pool | None = None, redis: Redis | None = None) -> Litestar:
    """The gateway. Opens its own Postgres pool and Redis client unless given them (tests, `ackflow dev`)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own_pool = pool is None
        own_redis = redis is None
        app.state.pool = pool or await create_pool(
            settings.database_url, size=settings.db_pool_size, timeout=settings.connect_timeout_seconds
        )
        app.state.redis = redis or Redis.from_url(
            settings.redis_url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30
        )
        app.state.authenticator = ApiKeyAuthenticator(app.state.pool, settings.auth_cache_seconds)
        try:
            yield
        finally:
            if own_redis:
                await app.state.redis.aclose()
            if own_pool:
                await app.state.pool.close()

    return Litestar(
        route_handlers=[RequestsController, HealthController],
        lifespan=[lifespan],
        dependencies={
            "settings": Provide(lambda: settings, use_cache=True, sync_to_thread=False),
            "pool": Provide(_pool, sync_to_thread=False),
            "redis": Provide(_redis, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        request_class=JsonRequest,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="ackflow",
            version="1",
            description="Acknowledge-first request processing. Authenticate with `Authorization: Bearer <api key>`.",
            render_plugins=[ScalarRenderPlugin()],
            openapi_router=Router(
                "/schema", route_handlers=[], include_in_schema=False, after_request=not_found_page_as_problem
            ),
        ),
        debug=False,
        logging_config=None,  # the CLI configures logging once for every role
    )


def _pool(state: State) -> asyncpg.Pool:
    pool: asyncpg.Pool = state.pool
    return pool


def _redis(state: State) -> Redis:
    redis: Redis = state.redis
    return redis
