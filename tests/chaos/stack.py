"""The chaos suite's own stack: Postgres, Redis, Temporal and the five production role processes.

Everything is started here, on free loopback ports, with data under one folder that survives a
kill, so a server restarted on the same port and folder keeps its data (Postgres' data directory,
Temporal's SQLite file; Redis keeps nothing, as it is only a fast path). The roles are the
`ackflow` console script, configured only by environment variables, exactly as an operator runs
them. A supervisor restarts any role that exits on its own (as systemd or Kubernetes would) and
counts it; the chaos holds a killed process down until it restarts it. Every process is stopped by
the pid this module started, never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from ackflow import devstack
from ackflow.errors import DevStackError
from ackflow.tenants import NewApiKey, create_tenant
from tests.helpers import assert_eventually

log = logging.getLogger(__name__)

ACKFLOW = str(Path(sys.executable).parent / "ackflow")
TASK_QUEUE = "chaos"
ROLES = ("gateway", "relay-1", "relay-2", "worker-1", "worker-2")
SERVERS = ("postgres", "redis", "temporal")
# Fast enough that a failed first attempt is retried within seconds, long enough to be a schedule.
WEBHOOK_RETRY_SCHEDULE = "0.5,1,2,2,3,3,3"
RESTART_TIMEOUT_SECONDS = 60.0


@dataclass
class ChaosStack:
    """The servers and roles of one scenario, by name (see ROLES and SERVERS)."""

    root: Path
    extra_env: dict[str, str] = field(default_factory=dict)  # the scenario's own settings for every role
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, devstack.ServerProcess] = field(default_factory=dict)
    held_down: set[str] = field(default_factory=set)
    unexpected_exits: Counter[str] = field(default_factory=Counter)
    timeline: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def base_url(self) -> str:
        return f"http://{devstack.LOOPBACK}:{self.ports['gateway']}"

    @property
    def database_url(self) -> str:
        return devstack.postgres_url(self.ports["postgres"], "ackflow")

    def note(self, what: str) -> None:
        """Add a line to the timeline printed when a scenario fails."""
        self.timeline.append(f"{time.monotonic() - self.started_at:6.1f}s {what}")

    def role_env(self) -> dict[str, str]:
        """The environment every role gets: the suite's servers, fast retries and short leases."""
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": devstack.redis_url(self.ports["redis"]),
            "TEMPORAL_ADDRESS": f"{devstack.LOOPBACK}:{self.ports['temporal']}",
            "ACKFLOW_TASK_QUEUE": TASK_QUEUE,
            "ACKFLOW_HANDLERS": "activities.examples",
            "ACKFLOW_PORT": str(self.ports["gateway"]),
            "ACKFLOW_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver listens on loopback
            "ACKFLOW_WEBHOOK_RETRY_SCHEDULE": WEBHOOK_RETRY_SCHEDULE,
            # ACKFLOW_WEBHOOK_LEASE_SECONDS stays at its default (60 s) or longer (scenarios.py): a lease
            # is renewed every lease/3 s, which re-leases a delivery stranded mid-hand-off and hides it.
            "ACKFLOW_RELAY_POLL_SECONDS": "0.5",
            "ACKFLOW_RATE_LIMIT_PER_SECOND": "100000",  # the clients test durability, not the quota
            "ACKFLOW_CONNECT_TIMEOUT_SECONDS": "5",
            "ACKFLOW_DB_POOL_SIZE": "5",
            **self.extra_env,
        }

    def ackflow(self, *args: str) -> str:
        """Run an `ackflow` command (migrate, tenant create) against the stack; its stdout."""
        clean = {k: v for k, v in os.environ.items() if k not in self.role_env()}
        result = subprocess.run(
            [ACKFLOW, *args], env={**clean, **self.role_env()}, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"ackflow {' '.join(args)} failed: {result.stderr}"
        return result.stdout

    async def start(self) -> None:
        """Start the servers, migrate, then the roles; return once the gateway answers."""
        self.ports = {name: devstack.free_port() for name in (*SERVERS, "gateway")}
        self.processes["temporal"] = devstack.start_temporal(self.root / "temporal", self.ports["temporal"], None)
        # Durable (not fast_unsafe): with synchronous_commit off a SIGKILL may lose a commit already answered.
        self.processes["postgres"] = devstack.start_postgres(self.root, self.ports["postgres"])
        self.processes["redis"] = devstack.start_redis(self.root, self.ports["redis"])
        for name in SERVERS:
            await _wait_ready(self.processes[name], RESTART_TIMEOUT_SECONDS)
        devstack.create_database(self.ports["postgres"], "ackflow")
        self.ackflow("migrate")
        clean = {k: v for k, v in os.environ.items() if k not in self.role_env()}
        for name in ROLES:
            command = name.split("-")[0]
            self.processes[name] = devstack.ServerProcess(
                name,
                [ACKFLOW, command],
                self.root / "logs" / f"{name}.log",
                env={**clean, **self.role_env()},
                ready=(lambda: devstack.port_open(self.ports["gateway"])) if command == "gateway" else lambda: True,
            )
            self.processes[name].start()
        await _wait_ready(self.processes["gateway"], RESTART_TIMEOUT_SECONDS)
        self.note("stack up")

    def kill(self, name: str) -> None:
        """SIGKILL one server or role by the pid we started, and hold it down until `restart`."""
        process = self.processes[name].process
        assert process is not None
        self.held_down.add(name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        self.note(f"SIGKILL {name} (pid {process.pid})")

    async def restart(self, name: str) -> None:
        """Start `name` again on the same port and data, and wait until it is ready."""
        server = self.processes[name]
        deadline = time.monotonic() + RESTART_TIMEOUT_SECONDS
        while True:
            server.start()
            # A killed Postgres' backends may hold its shared memory a moment: the new one then exits.
            if await _wait_ready(server, max(1.0, deadline - time.monotonic()), exit_ok=True):
                break
            assert time.monotonic() < deadline, f"{name} did not restart: {server.log_tail()}"
            await asyncio.sleep(0.5)
        self.held_down.discard(name)
        self.note(f"restarted {name} (pid {server.process.pid if server.process else '?'})")

    async def supervise(self) -> None:
        """Restart any role that exited while not held down, as a process supervisor would."""
        while True:
            for name in ROLES:
                process = self.processes[name].process
                if name not in self.held_down and process is not None and process.poll() is not None:
                    self.unexpected_exits[name] += 1
                    last = self.processes[name].log_tail(1)[:300]
                    self.note(f"{name} exited by itself with {process.returncode}, restarting it; its log: {last}")
                    self.processes[name].start()
            await asyncio.sleep(0.5)

    def stop(self) -> None:
        """Stop every role (SIGTERM, then SIGKILL), then every server; by pid."""
        devstack.stop_all([self.processes[name] for name in ROLES if name in self.processes], timeout=15)
        devstack.stop_all([self.processes[name] for name in SERVERS if name in self.processes])

    def log_count(self, fragment: str) -> int:
        """How many lines of the roles' logs contain `fragment` (failed hand-offs, dispatches)."""
        count = 0
        for name in ROLES:
            with contextlib.suppress(OSError):
                count += self.processes[name].log_path.read_text(errors="replace").count(fragment)
        return count

    def log_tails(self, lines: int = 2, width: int = 300) -> str:
        """The last lines of each process's log, each cut to `width` characters."""
        tails = []
        for name, process in self.processes.items():
            tail = [line[:width] for line in process.log_tail(lines).split(" | ")]
            tails.append(f"  {name}: " + " | ".join(tail))
        return "\n".join(tails)


async def _wait_ready(server: devstack.ServerProcess, timeout: float, *, exit_ok: bool = False) -> bool:
    """Poll the server's ready check; False (with `exit_ok`) if it exited first, else an error."""

    async def probe() -> bool:
        assert server.process is not None
        if server.process.poll() is not None:
            if exit_ok:
                return True
            raise DevStackError(f"{server.name} exited with {server.process.returncode}: {server.log_tail()}")
        return server.ready()

    await assert_eventually(probe, timeout=timeout, interval=0.2, message=f"{server.name} did not become ready")
    assert server.process is not None
    return server.process.poll() is None


@contextlib.asynccontextmanager
async def running_stack(root: Path, extra_env: dict[str, str]) -> AsyncIterator[ChaosStack]:
    """A started ChaosStack with its supervisor; everything stopped afterwards, whatever happened."""
    stack = ChaosStack(root, extra_env)
    supervisor: asyncio.Task[None] | None = None
    try:
        await stack.start()
        supervisor = asyncio.create_task(stack.supervise())
        yield stack
    finally:
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        stack.stop()


async def tenant_once_registered(pool: asyncpg.Pool, name: str, kind: str) -> NewApiKey:
    """A new tenant (with its API key), once a worker of the stack has registered `kind`: before that,
    the gateway would refuse requests of that kind and the accept statement would write nothing."""
    async with pool.acquire() as connection:
        key = await create_tenant(connection, name)
    await assert_eventually(
        lambda: pool.fetchval("SELECT count(*) FROM handler_kinds WHERE kind = $1", kind),
        timeout=60,
        message=f"no worker registered the {kind} kind",
    )
    return key
