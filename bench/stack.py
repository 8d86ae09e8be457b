"""The benchmark's own stack: embedded servers on free ports, then each role as its own process.

Postgres, Valkey and Temporal start exactly as under `ackflow dev` (devstack, same settings, data in
a temporary folder). Gateway, relay and worker run as `ackflow gateway|relay|worker` subprocesses
configured by environment variables, as in production: each gets its own interpreter and GIL, and
the load generator's CPU stays out of their event loops. The bare ceiling endpoint and the raw
Temporal worker are subprocesses too, so every pair compares like with like.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from ackflow import devstack
from ackflow.db.migrate import migrate
from ackflow.db.pool import connect
from ackflow.tenants import create_tenant
from bench.bare_app import TABLE_DDL

TASK_QUEUE = "ackflow-bench"
RAW_TASK_QUEUE = "raw-bench"
HANDLERS = "activities.examples"


@dataclass
class Stack:
    """Where everything listens, the tenant's API key, and the processes to stop at the end."""

    root: Path
    database_url: str
    redis_url: str
    temporal_address: str
    gateway_port: int
    bare_port: int
    api_key: str = ""
    processes: dict[str, devstack.ServerProcess] = field(default_factory=dict)
    servers: dict[str, devstack.ServerProcess] = field(default_factory=dict)  # Postgres, Redis, Temporal

    @property
    def gateway_url(self) -> str:
        return f"http://{devstack.LOOPBACK}:{self.gateway_port}"

    @property
    def bare_url(self) -> str:
        return f"http://{devstack.LOOPBACK}:{self.bare_port}"

    def role_env(self) -> dict[str, str]:
        """The environment every ackflow role gets: the servers, and limits that would cap the benchmark."""
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "TEMPORAL_ADDRESS": self.temporal_address,
            "ACKFLOW_TASK_QUEUE": TASK_QUEUE,
            "ACKFLOW_HANDLERS": HANDLERS,
            "ACKFLOW_PORT": str(self.gateway_port),
            "ACKFLOW_RATE_LIMIT_PER_SECOND": "1000000",  # measure the path, not the tenant's quota
            "ACKFLOW_WEBHOOK_ALLOW_PRIVATE": "true",  # the webhook receiver listens on loopback
            "ACKFLOW_MAX_STREAMS_PER_TENANT": "100000",  # fan-out holds 10,000 streams of one tenant
            "ACKFLOW_LOG_LEVEL": "WARNING",
        }

    def start(self, name: str, argv: list[str], env: dict[str, str], ready: Callable[[], bool]) -> None:
        """Start a named subprocess and wait until `ready` says it serves."""
        process = devstack.ServerProcess(name, argv, self.root / "logs" / f"{name}.log", ready=ready, env=env)
        process.start()
        self.processes[name] = process
        process.wait_until_ready()

    def start_role(self, role: str, env: dict[str, str] | None = None) -> None:
        """`ackflow gateway|relay|worker` as a subprocess, with `env` on top of role_env."""
        ready = (lambda: devstack.port_open(self.gateway_port)) if role == "gateway" else (lambda: True)
        self.start(role, [str(devstack.find_venv_binary("ackflow")), role], self.role_env() | (env or {}), ready)

    def ensure_role(self, role: str, env: dict[str, str] | None = None) -> None:
        """Start the role unless it runs already (with `env` on top of role_env, restarting it if given)."""
        if env is not None:
            self.stop(role)
        if role not in self.processes:
            self.start_role(role, env)

    def pid(self, name: str) -> int:
        """The process id of a running subprocess (to read its memory from /proc, or to profile it)."""
        process = (self.processes.get(name) or self.servers[name]).process
        assert process is not None, f"{name} was never started"
        return process.pid

    def pids(self) -> dict[str, int]:
        """name -> pid of every server and role running now."""
        running = self.servers | self.processes
        return {name: p.process.pid for name, p in running.items() if p.process and p.process.poll() is None}

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            process.stop()


def _start_servers(root: Path) -> tuple[list[devstack.ServerProcess], dict[str, int]]:
    ports = {name: devstack.free_port() for name in ("postgres", "redis", "temporal", "gateway", "bare")}
    servers: list[devstack.ServerProcess] = []
    try:
        servers.append(devstack.start_temporal(root / "temporal", ports["temporal"], ui_port=None))
        servers.append(devstack.start_postgres(root, ports["postgres"]))
        servers.append(devstack.start_redis(root, ports["redis"]))
        for server in servers:
            server.wait_until_ready()
    except BaseException:
        devstack.stop_all(servers)
        raise
    return servers, ports


async def _prepare_database(database_url: str) -> str:
    """Migrate, create the benchmark's tenant and the bare table; return the tenant's API key."""
    connection = await connect(database_url)
    try:
        await migrate(connection)
        await connection.execute(TABLE_DDL)
        return (await create_tenant(connection, "bench")).key
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def running_stack() -> AsyncIterator[Stack]:
    """Servers, database, tenant, worker, gateway and the bare endpoint; everything stopped after."""
    root = Path(tempfile.mkdtemp(prefix="ackflow-bench-"))
    servers, ports = _start_servers(root)
    stack = Stack(
        root,
        devstack.create_database(ports["postgres"], "ackflow"),
        devstack.redis_url(ports["redis"]),
        f"{devstack.LOOPBACK}:{ports['temporal']}",
        ports["gateway"],
        ports["bare"],
    )
    stack.servers = {server.name.split()[0].lower(): server for server in servers}
    try:
        stack.api_key = await _prepare_database(stack.database_url)
        stack.start_role("worker")
        stack.start_role("gateway")
        bare_env = {"BENCH_DATABASE_URL": stack.database_url, "BENCH_PORT": str(stack.bare_port)}
        bare_argv = [sys.executable, "-m", "bench.bare_app"]
        stack.start("bare", bare_argv, bare_env, lambda: devstack.port_open(stack.bare_port))
        await wait_until_serving(stack)
        yield stack
    finally:
        devstack.stop_all(list(stack.processes.values()))
        devstack.stop_all(servers)
        shutil.rmtree(root, ignore_errors=True)


async def wait_until_serving(stack: Stack, timeout: float = 30.0) -> None:
    """The worker has registered its kinds and the gateway answers ready."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=2) as http:
        while time.monotonic() < deadline:
            kinds = await _registered_kinds(stack.database_url)
            with contextlib.suppress(httpx.HTTPError):
                if kinds and (await http.get("/health/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the stack did not become ready in {timeout:.0f}s; logs in {stack.root / 'logs'}")


async def _registered_kinds(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM handler_kinds"))
    finally:
        await connection.close()
