"""`ackflow dev`: the whole stack on embedded servers, in one command, with a banner and dev.json.

Postgres, Redis and Temporal run as child processes (see devstack); gateway, relay and worker run
in this process. Ctrl-C or SIGTERM stops everything; data stays in the state directory for the
next start. A second `ackflow dev` on the same state directory is refused by a file lock.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from ackflow import devstack
from ackflow.errors import DevStackError
from ackflow.settings import Settings

DEV_TENANT = "dev"
DEV_HANDLERS = ("activities.examples", "examples.pipeline")


def run_dev(state_dir: str, http_port: int, base: Settings) -> None:
    """Start everything, serve until signalled, stop everything (within 10 s)."""
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    lock = _lock_state_dir(state)
    devstack.ensure_port_free(http_port)
    # SIGTERM before the event loop runs must still stop the servers: make it unwind like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ports = {name: devstack.free_port() for name in ("postgres", "redis", "temporal", "temporal_ui")}
    servers: list[devstack.ServerProcess] = []
    try:
        servers.append(devstack.start_temporal(state, ports["temporal"], ports["temporal_ui"]))
        servers.append(devstack.start_postgres(state, ports["postgres"]))
        servers.append(devstack.start_redis(state, ports["redis"]))
        for server in servers:
            server.wait_until_ready()
        settings = replace(
            base,
            database_url=devstack.create_database(ports["postgres"], "ackflow"),
            redis_url=devstack.redis_url(ports["redis"]),
            temporal_address=f"{devstack.LOOPBACK}:{ports['temporal']}",
            handler_modules=base.handler_modules or DEV_HANDLERS,
            http_host=devstack.LOOPBACK,
            http_port=http_port,
            webhook_allow_private=True,  # so webhooks to receivers on this machine work in development
        )
        info = {
            "api_url": f"http://{devstack.LOOPBACK}:{http_port}",
            "temporal_ui_url": f"http://{devstack.LOOPBACK}:{ports['temporal_ui']}",
            "database_url": settings.database_url,
            "redis_url": settings.redis_url,
            "temporal_address": settings.temporal_address,
            "metrics_url": _metrics_url(settings),
        }
        from ackflow.tracing import configured_tracing

        with configured_tracing("ackflow"):  # exports only if OTEL_EXPORTER_OTLP_ENDPOINT is set
            asyncio.run(_serve(settings, state, info))
    finally:
        devstack.stop_all(servers)
        (state / "dev.json").unlink(missing_ok=True)
        lock.close()


def _lock_state_dir(state: Path) -> IO[str]:
    handle = open(state / "dev.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise DevStackError(f"another `ackflow dev` (pid {pid}) is already using {state}; stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


async def _serve(settings: Settings, state: Path, info: dict[str, Any]) -> None:
    from ackflow.db.migrate import migrate
    from ackflow.db.pool import connect
    from ackflow.handlers import load_handler_modules
    from ackflow.metrics.serve import serving_metrics
    from ackflow.roles import run_gateway, run_relay, run_worker
    from ackflow.services import open_services

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    connection = await connect(settings.database_url)
    try:
        await migrate(connection)
        info["api_key"] = await _dev_api_key(connection, state)
    finally:
        await connection.close()
    registry = load_handler_modules(settings.handler_modules)
    async with open_services(settings, redis=True, temporal=True) as services, serving_metrics(settings):
        roles = [
            asyncio.create_task(run_gateway(settings, stop, pool=services.pool, redis=services.redis)),
            asyncio.create_task(
                run_relay(settings, stop, pool=services.pool, client=services.temporal, redis=services.redis)
            ),
            asyncio.create_task(
                run_worker(settings, stop, pool=services.pool, client=services.temporal, registry=registry)
            ),
        ]
        (state / "dev.json").write_text(json.dumps(info, indent=2) + "\n")
        await asyncio.sleep(0.5)  # let the gateway bind before we say it is up
        print(_banner(info, registry.kinds()), flush=True)
        await asyncio.wait([*roles, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        results = await asyncio.gather(*roles, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise DevStackError(f"a role stopped with an error: {result!r}")
    print("ackflow dev stopped; data kept in", state, flush=True)


async def _dev_api_key(connection: Any, state: Path) -> str:
    """The dev tenant's key: reuse the one saved in the state dir if still valid, else make one."""
    from ackflow.db.queries import sql
    from ackflow.tenants import create_api_key, ensure_tenant, hash_api_key

    key_file = state / "dev-api-key"
    tenant_id, _ = await ensure_tenant(connection, DEV_TENANT)
    if key_file.exists():
        key = key_file.read_text().strip()
        if await connection.fetchval(sql("tenant_for_key"), hash_api_key(key)) == tenant_id:
            return key
    new_key = await create_api_key(connection, tenant_id)
    key_file.write_text(new_key.key + "\n")
    key_file.chmod(0o600)
    return new_key.key


def _metrics_url(settings: Settings) -> str:
    """Where /metrics is: the API's port, or ACKFLOW_METRICS_HOST:PORT when set."""
    if settings.metrics_port is None:
        return f"http://{settings.http_host}:{settings.http_port}/metrics"
    return f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"


def _banner(info: dict[str, Any], kinds: list[str]) -> str:
    api = info["api_url"]
    return f"""
  ackflow dev is up
    API            {api}
    Browser page   {api}/   (submit a request and watch it live)
    OpenAPI docs   {api}/schema
    Temporal UI    {info["temporal_ui_url"]}
    Metrics        {info["metrics_url"]}   (every role's: they all run in this process)
    API key        {info["api_key"]}
    handler kinds  {", ".join(kinds)}
    (the same as JSON in dev.json of the state dir; Ctrl-C stops everything)

  try:
    curl -si -X POST {api}/v1/requests -H 'Authorization: Bearer {info["api_key"]}' \\
         -H 'Content-Type: application/json' -d '{{"kind": "echo", "payload": {{"hello": "world"}}}}'
  then watch it live:  curl -N '{api}<links.events from that answer>'
"""
