"""The `ackflow` command: the development stack and each production role.

    ackflow dev [--state-dir .ackflow] [--port 8000]   everything, on embedded servers
    ackflow gateway | relay | worker                     one production role, configured by env vars
    ackflow migrate                                      apply database migrations
    ackflow prune                                        delete finished work past its retention, now
    ackflow tenant create NAME | set-rate NAME N         a tenant and its first API key (printed once); its rate
    ackflow tenant set-weight NAME W                     its weight in the fair sharing of admission
    ackflow outbox [--dead] | retry ID | drop ID         outbox rows by age and error (dead letters with --dead)
    ackflow status [--json]                              each stage's backlog at a glance
    ackflow requests show ID [--json]                    a request's state, events, workflow, trace and deliveries
    ackflow key create TENANT | list TENANT | revoke TENANT PREFIX   API keys

Errors ackflow expects (bad config, a service down, a port taken, the server extra not installed)
are one line on stderr. Every command's connections are opened and closed in one place: `_run_role`
here for the long-running roles, `ackflow.commands.with_database` for the one-shot commands (their
modules: `ackflow/commands/operations.py`, `tenants.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ackflow.commands.operations import add_operation_commands
from ackflow.commands.tenants import add_tenant_commands
from ackflow.errors import AckflowError
from ackflow.logs import configure_logging
from ackflow.settings import Settings

if TYPE_CHECKING:  # the base install (the client) has none of the server's packages
    from ackflow.services import Services

log = logging.getLogger("ackflow")

# The top-level modules of the `server` extra: a command that misses one names the install, not a traceback.
SERVER_MODULES = frozenset(
    {
        "litestar",
        "uvicorn",
        "httptools",
        "asyncpg",
        "redis",
        "temporalio",
        "websockets",
        "standardwebhooks",
        "opentelemetry",
        "prometheus_client",
        "pythonjsonlogger",
    }
)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `ackflow` console script."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(settings, default_format=getattr(args, "log_format", "text"))
        args.run(args, settings)
    except AckflowError as exc:
        print(f"ackflow: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in SERVER_MODULES:
            raise
        extra = "dev" if args.command == "dev" else "server"
        print(
            f"ackflow: error: `ackflow {args.command}` needs the {extra} install ({exc.name} is missing): "
            f"pip install 'ackflow[{extra}]'",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ackflow", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="run the whole stack on embedded Postgres, Redis and Temporal")
    dev.add_argument("--state-dir", default=".ackflow", help="where data and logs live (default: .ackflow)")
    dev.add_argument("--port", type=int, default=8000, help="HTTP port of the API (default: 8000)")
    dev.set_defaults(run=_dev)

    for name, run, text in (
        ("gateway", _gateway, "serve the HTTP API"),
        ("relay", _relay, "relay the outbox to Temporal and Redis"),
        ("worker", _worker, "run workflows, activities and handlers"),
    ):
        # The long-running roles log JSON lines for a log pipeline; the other commands, text for a person.
        commands.add_parser(name, help=text).set_defaults(run=run, log_format="json")

    add_operation_commands(commands)
    add_tenant_commands(commands)
    return parser


def run_until_signalled(role: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `role(stop)` until SIGINT or SIGTERM sets `stop`."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await role(stop)

    asyncio.run(runner())


def _run_role(
    settings: Settings,
    role: Callable[[Services, asyncio.Event], Awaitable[None]],
    *,
    name: str,
    redis: bool,
    temporal: bool,
) -> None:
    """Open the connections a role needs, run it until SIGINT or SIGTERM, then close them. Its traces are
    exported as service `ackflow-<name>` if OTEL_EXPORTER_OTLP_ENDPOINT is set (ackflow/tracing.py)."""
    from ackflow.metrics.serve import serving_metrics
    from ackflow.services import open_services
    from ackflow.tracing import configured_tracing

    async def run(stop: asyncio.Event) -> None:
        # With ACKFLOW_METRICS_PORT, the role's /metrics on a port of its own, stopped with the role.
        async with open_services(settings, redis=redis, temporal=temporal) as services, serving_metrics(settings):
            await role(services, stop)

    with configured_tracing(f"ackflow-{name}"):
        run_until_signalled(run)


def _dev(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.dev import run_dev

    run_dev(args.state_dir, args.port, settings)


def _gateway(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.roles import run_gateway

    settings.require("database_url", "redis_url")

    async def role(services: Services, stop: asyncio.Event) -> None:
        await run_gateway(settings, stop, pool=services.pool, redis=services.redis, tune_gc=True)

    _run_role(settings, role, name="gateway", redis=True, temporal=False)


def _relay(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.roles import run_relay

    settings.require("database_url", "redis_url", "temporal_address")

    async def role(services: Services, stop: asyncio.Event) -> None:
        await run_relay(settings, stop, pool=services.pool, client=services.temporal, redis=services.redis)

    _run_role(settings, role, name="relay", redis=True, temporal=True)


def _worker(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.handlers import load_handler_modules
    from ackflow.roles import run_worker

    settings.require("database_url", "temporal_address", "handler_modules")
    registry = load_handler_modules(settings.handler_modules)

    async def role(services: Services, stop: asyncio.Event) -> None:
        await run_worker(settings, stop, pool=services.pool, client=services.temporal, registry=registry)

    _run_role(settings, role, name="worker", redis=False, temporal=True)


if __name__ == "__main__":
    main()
