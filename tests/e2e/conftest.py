"""What the webhook tests share: a local receiver, and the whole stack with fast webhook retries."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow.handlers import HandlerRegistry
from ackflow.settings import Settings
from tests.conftest import Tenant, api_client, running_roles
from tests.receiver import Receiver, running_receiver

FAST_SCHEDULE = (0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as running:
        yield running


@pytest.fixture
async def http(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> AsyncIterator[httpx.AsyncClient]:
    """The whole stack (private webhook targets allowed, as in development) with fast retries, as `tenant`."""
    async with webhook_stack(settings, pool, redis, temporal, registry, tenant.api_key) as client:
        yield client


@contextlib.asynccontextmanager
async def webhook_stack(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, api_key: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The whole stack with the fast retry schedule and a 2 s dispatcher lease, and a client of it."""
    fast = replace(settings, webhook_retry_schedule=FAST_SCHEDULE, webhook_lease_seconds=2)
    async with running_roles(fast, pool, redis, temporal, registry), api_client(fast, api_key) as client:
        yield client


class _ErrorRecords(logging.Handler):
    """Keeps every record of ERROR or above."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def no_gateway_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A 500 is logged by gateway.problems; none may be, whatever the input (for the hostile-input suites).

    Nor may uvicorn log an exception that escaped the app (a WebSocket handler's, which no problem
    handler sees); uvicorn's loggers do not propagate to the root, so they get a handler of their own.
    """
    caplog.set_level(logging.DEBUG, logger="gateway")
    escaped, uvicorn_log = _ErrorRecords(), logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(escaped)
    try:
        yield
    finally:
        uvicorn_log.removeHandler(escaped)
    errors = [r for r in caplog.get_records("call") if r.name.startswith("gateway") and r.levelno >= logging.ERROR]
    assert not errors + escaped.records, [r.getMessage() for r in errors + escaped.records]
