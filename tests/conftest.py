"""Fixtures: real Postgres, Redis and Temporal servers from the wheels, started once per session.

Each test gets a fresh database cloned from a migrated template, and its own Temporal task queue,
so tests never see each other's data or work.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow import devstack
from ackflow.db.migrate import migrate
from ackflow.db.pool import create_pool
from ackflow.handlers import HandlerRegistry, load_handler_modules
from ackflow.settings import Settings
from ackflow.tenants import create_tenant
from tests.helpers import assert_eventually

TEMPLATE_DB = "ackflow_template"
_database_numbers = itertools.count()


@dataclass(frozen=True)
class Servers:
    postgres_port: int
    redis_port: int
    temporal_address: str


@pytest.fixture(scope="session")
def server_root() -> Iterator[Path]:
    """Where servers keep their data: not under pytest's tmp root, whose permissions any other
    pytest run resets to 0700 (which would lock out Postgres' unprivileged user when run as root)."""
    root = Path(tempfile.mkdtemp(prefix="ackflow-test-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def server_dir(server_root: Path) -> Path:
    """A fresh folder for a server started by one test."""
    return Path(tempfile.mkdtemp(dir=server_root))


@pytest.fixture(scope="session")
def servers(server_root: Path) -> Iterator[Servers]:
    """Postgres, Redis and Temporal, booted side by side, stopped at the end of the session."""
    state = server_root / "session"
    ports = {name: devstack.free_port() for name in ("postgres", "redis", "temporal")}
    started: list[devstack.ServerProcess] = []
    try:
        started.append(devstack.start_temporal(state / "temporal", ports["temporal"], ui_port=None))
        started.append(devstack.start_postgres(state, ports["postgres"], fast_unsafe=True))
        started.append(devstack.start_redis(state, ports["redis"]))
        for server in started:
            server.wait_until_ready()
        template_url = devstack.create_database(ports["postgres"], TEMPLATE_DB)
        asyncio.run(migrate_database(template_url))
        yield Servers(ports["postgres"], ports["redis"], f"{devstack.LOOPBACK}:{ports['temporal']}")
    finally:
        devstack.stop_all(started)


async def migrate_database(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await migrate(connection)
    finally:
        await connection.close()


@pytest.fixture
async def database_url(servers: Servers) -> AsyncIterator[str]:
    """A fresh, migrated database for this test only."""
    name = f"test_{next(_database_numbers)}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(devstack.postgres_url(servers.postgres_port, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE_DB}')
        yield devstack.postgres_url(servers.postgres_port, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def settings(servers: Servers, database_url: str) -> Settings:
    """Settings pointing at the test servers, with a task queue no other test uses."""
    return Settings(
        database_url=database_url,
        redis_url=devstack.redis_url(servers.redis_port),
        temporal_address=servers.temporal_address,
        task_queue=f"test-{uuid.uuid4().hex[:12]}",
        handler_modules=("activities.examples", "examples.pipeline", "tests.handlers"),
        http_port=devstack.free_port(),
        relay_poll_seconds=0.5,
        auth_cache_seconds=0.5,
        webhook_allow_private=True,  # receivers in tests listen on loopback
    )


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(settings.database_url, size=10)
    yield pool
    await pool.close()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    yield client
    await client.aclose()


@pytest.fixture
async def temporal(settings: Settings) -> Client:
    return await Client.connect(settings.temporal_address)


@pytest.fixture
def registry(settings: Settings) -> HandlerRegistry:
    return load_handler_modules(settings.handler_modules)


@dataclass
class Tenant:
    id: uuid.UUID
    api_key: str


async def make_tenant(pool: asyncpg.Pool, name: str) -> Tenant:
    async with pool.acquire() as connection:
        new_key = await create_tenant(connection, name)
    return Tenant(new_key.tenant_id, new_key.key)


@pytest.fixture
async def tenant(pool: asyncpg.Pool) -> Tenant:
    return await make_tenant(pool, "acme")


@pytest.fixture
async def other_tenant(pool: asyncpg.Pool) -> Tenant:
    return await make_tenant(pool, "globex")


@contextlib.asynccontextmanager
async def running_roles(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: Redis,
    temporal: Client,
    registry: HandlerRegistry,
    *,
    gateway: bool = True,
    relay: bool = True,
    worker: bool = True,
) -> AsyncIterator[None]:
    """Run the chosen roles in this event loop, as `ackflow dev` does, and stop them after."""
    from ackflow.roles import run_gateway, run_relay, run_worker

    stop = asyncio.Event()
    tasks = []
    if worker:
        tasks.append(asyncio.create_task(run_worker(settings, stop, pool=pool, client=temporal, registry=registry)))
    if relay:
        tasks.append(asyncio.create_task(run_relay(settings, stop, pool=pool, client=temporal, redis=redis)))
    if gateway:
        tasks.append(asyncio.create_task(run_gateway(settings, stop, pool=pool, redis=redis)))
        await assert_eventually(lambda: _port_open(settings.http_port), timeout=10, message="gateway did not bind")
    try:
        yield
    finally:
        stop.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=15)
        errors = [r for r in results if isinstance(r, BaseException)]
        # With each error's whole chain: "Failed validating workflow" alone does not say why.
        assert not errors, "a role failed:\n" + "".join("".join(traceback.format_exception(e)) for e in errors)


async def _port_open(port: int) -> bool:
    return devstack.port_open(port)


@pytest.fixture
async def stack(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry
) -> AsyncIterator[None]:
    """Gateway, relay and worker running against the test servers."""
    async with running_roles(settings, pool, redis, temporal, registry):
        yield


def api_client(settings: Settings, api_key: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}", headers=headers, timeout=10)


@pytest.fixture
async def client(stack: None, settings: Settings, tenant: Tenant) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the running gateway, authenticated as `tenant`."""
    async with api_client(settings, tenant.api_key) as http:
        yield http
