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
for the long-running roles, `_with_database` for the one-connection commands.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

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
        ("migrate", _migrate, "apply database migrations"),
        ("prune", _prune, "delete finished work past its retention now (one pass; relays also do it)"),
    ):
        # The long-running roles log JSON lines for a log pipeline; the one-shot commands, text for a person.
        log_format = "json" if name in ("gateway", "relay", "worker") else "text"
        commands.add_parser(name, help=text).set_defaults(run=run, log_format=log_format)

    tenant = commands.add_parser("tenant", help="manage tenants")
    tenant_commands = tenant.add_subparsers(dest="tenant_command", required=True, metavar="ACTION")
    create = tenant_commands.add_parser("create", help="create a tenant and print its first API key")
    create.add_argument("name")
    create.set_defaults(run=_tenant_create)
    set_rate = tenant_commands.add_parser("set-rate", help="set a tenant's accept rate limit (requests a second)")
    set_rate.add_argument("name")
    set_rate.add_argument("rate", type=int, help="requests a second; 0 returns to ACKFLOW_RATE_LIMIT_PER_SECOND")
    set_rate.set_defaults(run=_tenant_set_rate)

    set_weight = tenant_commands.add_parser("set-weight", help="set a tenant's weight in the sharing of admission")
    set_weight.add_argument("name")
    set_weight.add_argument("weight", type=int, help="1 (the default) to 1000: its share relative to other tenants'")
    set_weight.set_defaults(run=_tenant_set_weight)

    outbox = commands.add_parser("outbox", help="outbox rows waiting or failing, and dead letters")
    outbox.add_argument("--dead", action="store_true", help="list dead-lettered rows instead")
    outbox.add_argument("--limit", type=int, default=50, help="rows to list, oldest first (default: 50)")
    outbox.set_defaults(run=_outbox_list)
    outbox_commands = outbox.add_subparsers(dest="outbox_command", metavar="ACTION")
    for action, run, text in (
        ("retry", _outbox_retry, "dispatch a row (dead or postponed) again now, its attempts from zero"),
        ("drop", _outbox_drop, "delete a row: its event is never dispatched"),
    ):
        parser_ = outbox_commands.add_parser(action, help=text)
        parser_.add_argument("id", type=int)
        parser_.set_defaults(run=run)

    status = commands.add_parser("status", help="each stage's health: outbox, admission, webhooks, dead letters")
    status.add_argument("--json", action="store_true", help="print JSON for scripts instead of aligned text")
    status.set_defaults(run=_status)
    requests = commands.add_parser("requests", help="inspect requests (any tenant's)")
    requests_commands = requests.add_subparsers(dest="requests_command", required=True, metavar="ACTION")
    show = requests_commands.add_parser(
        "show", help="a request's state, event history, workflow (Temporal UI link), trace id and webhook deliveries"
    )
    show.add_argument("id", help="the request id")
    show.add_argument("--json", action="store_true", help="print one JSON document instead")
    show.set_defaults(run=_requests_show)

    key = commands.add_parser("key", help="manage API keys")
    key_commands = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    key_create = key_commands.add_parser("create", help="a new API key for a tenant (printed once)")
    key_create.add_argument("tenant")
    key_create.set_defaults(run=_key_create)
    key_list = key_commands.add_parser("list", help="a tenant's keys: prefix, created, revoked")
    key_list.add_argument("tenant")
    key_list.set_defaults(run=_key_list)
    key_revoke = key_commands.add_parser(
        "revoke",
        help="revoke one of a tenant's keys, on every gateway at once: its open streams and capability URLs end too",
    )
    key_revoke.add_argument("tenant")
    key_revoke.add_argument("prefix", help="the key's prefix as `key list` shows it (ak_1a2b3c4d_…), or the whole key")
    key_revoke.set_defaults(run=_key_revoke)
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


def _migrate(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.migrate import migrate

    async def run(connection: Any) -> None:
        applied = await migrate(connection)
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "none (up to date)"
        print(f"migrations applied: {names}")

    _with_database(settings, run)


def _prune(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.retention import RetentionPolicy, describe, prune

    async def run(connection: Any) -> None:
        counts = await prune(connection, RetentionPolicy.from_settings(settings))
        print(f"pruned {describe(counts)}")

    _with_database(settings, run)


def _tenant_create(args: argparse.Namespace, settings: Settings) -> None:
    import asyncpg

    from ackflow.errors import Conflict
    from ackflow.tenants import create_tenant

    async def run(connection: Any) -> None:
        try:
            new_key = await create_tenant(connection, args.name)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a tenant named {args.name!r} already exists") from None
        print(f"tenant {args.name} created (id {new_key.tenant_id})")
        print(f"API key (shown once, store it now): {new_key.key}")

    _with_database(settings, run)


def _tenant_set_rate(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.queries import sql
    from ackflow.errors import InvalidInput, NotFound

    settings.require("database_url")
    if args.rate < 0:
        raise InvalidInput("the rate must be 0 (the default) or more requests a second")

    async def run(connection: Any) -> None:
        if await connection.fetchval(sql("set_tenant_accept_rate"), args.name, args.rate or None) is None:
            raise NotFound(f"no tenant is named {args.name!r}")
        limit = f"{args.rate} requests a second" if args.rate else "the default (ACKFLOW_RATE_LIMIT_PER_SECOND)"
        print(f"tenant {args.name} may now accept {limit}; gateways apply it within 10 s")

    _with_database(settings, run)


def _tenant_set_weight(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.queries import sql
    from ackflow.errors import InvalidInput, NotFound

    if not 1 <= args.weight <= 1000:
        raise InvalidInput("the weight must be between 1 and 1000")

    async def run(connection: Any) -> None:
        if await connection.fetchval(sql("set_tenant_admission_weight"), args.name, args.weight) is None:
            raise NotFound(f"no tenant is named {args.name!r}")
        print(f"tenant {args.name} now has admission weight {args.weight}; the next claim applies it")

    _with_database(settings, run)


def _outbox_list(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.queries import sql

    async def run(connection: Any) -> None:
        rows = await connection.fetch(sql("list_outbox"), args.dead, args.limit)
        if not rows:
            print("no dead-lettered outbox rows" if args.dead else "the outbox is empty")
        for row in rows:
            stamp = "%Y-%m-%d %H:%M:%S"
            when = f"dead {row['dead_at']:{stamp}}" if row["dead_at"] else f"due {row['available_at']:{stamp}}"
            print(
                f"{row['id']}  {row['topic']}  request {row['request_id']}  created {row['created_at']:{stamp}}"
                f"  {when}  attempts {row['attempts']}  {row['last_error'] or ''}".rstrip()
            )

    _with_database(settings, run)


def _outbox_retry(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.queries import sql
    from ackflow.errors import Conflict

    async def run(connection: Any) -> None:
        row = await _outbox_row(connection, args.id)
        if await connection.fetchrow(sql("retry_outbox_row"), args.id) is None:
            raise Conflict(f"request {row['request_id']} has already ended {row['status']}: submit it again instead")
        print(f"outbox row {args.id} ({row['topic']}, request {row['request_id']}) will be dispatched again now")

    _with_database(settings, run)


def _outbox_drop(args: argparse.Namespace, settings: Settings) -> None:
    """Delete a row; accepted requests whose row (or batch row) is dropped can never start, so they end FAILED."""
    from ackflow.db.queries import sql
    from ackflow.db.transitions import fail_unstarted

    async def run(connection: Any) -> None:
        row = await _outbox_row(connection, args.id)
        async with connection.transaction():
            dropped = await connection.fetchrow(sql("drop_outbox_row"), args.id)
            if dropped is not None:
                error = {"type": "DispatchDropped", "message": "an operator dropped its outbox row before it started"}
                await fail_unstarted(connection, dropped, error)
        print(
            f"outbox row {args.id} ({row['topic']}, request {row['request_id']}) dropped: it will never be dispatched"
        )

    _with_database(settings, run)


async def _outbox_row(connection: Any, row_id: int) -> Any:
    from ackflow.db.queries import sql
    from ackflow.errors import NotFound

    row = await connection.fetchrow(sql("outbox_row"), row_id)
    if row is None:
        raise NotFound(f"no outbox row has id {row_id}")
    return row


def _status(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.status import print_status

    async def run(connection: Any) -> None:
        await print_status(connection, as_json=args.json)

    _with_database(settings, run)


def _requests_show(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.ops_requests import render_json, render_text, request_report

    async def run(connection: Any) -> None:
        ui, namespace = settings.temporal_ui_url, settings.temporal_namespace
        report = await request_report(connection, args.id, ui_url=ui, namespace=namespace)
        print(render_json(report) if args.json else render_text(report))

    _with_database(settings, run)


def _key_create(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.queries import sql
    from ackflow.errors import NotFound
    from ackflow.tenants import create_api_key

    async def run(connection: Any) -> None:
        tenant_id = await connection.fetchval(sql("tenant_by_name"), args.tenant)
        if tenant_id is None:
            raise NotFound(f"no tenant is named {args.tenant!r}")
        new_key = await create_api_key(connection, tenant_id)
        print(f"API key for {args.tenant} (shown once, store it now): {new_key.key}")

    _with_database(settings, run)


def _key_list(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.queries import sql

    async def run(connection: Any) -> None:
        rows = await connection.fetch(sql("list_api_keys"), args.tenant)
        if not rows:
            print(f"no keys for a tenant named {args.tenant!r}")
        for row in rows:
            revoked = f"revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "active"
            print(f"ak_{row['prefix']}_…  created {row['created_at']:%Y-%m-%d %H:%M}  {revoked}")

    _with_database(settings, run)


def _key_revoke(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.queries import sql
    from ackflow.errors import Conflict, NotFound
    from ackflow.tenants import hash_api_key

    given = args.prefix.strip().rstrip("…")
    prefix, _, secret = given.removeprefix("ak_").partition("_")
    whole_key = hash_api_key(given) if secret else None  # the whole key names exactly one

    async def run(connection: Any) -> None:
        async with connection.transaction():
            keys = await connection.fetch(sql("tenant_keys_with_prefix"), args.tenant, prefix)
            if whole_key is not None:
                keys = [key for key in keys if bytes(key["key_hash"]) == whole_key]
            if not keys:
                raise NotFound(f"tenant {args.tenant!r} has no active key with the prefix {prefix!r}")
            if len(keys) > 1:
                raise Conflict(
                    f"tenant {args.tenant!r} has {len(keys)} active keys with the prefix {prefix!r}: "
                    "revoke one by passing the whole key"
                )
            key_hash = await connection.fetchval(sql("revoke_api_key"), keys[0]["id"])
        announced = await _announce_revocation(settings, bytes(key_hash))
        where = "on every gateway now" if announced else f"within {settings.auth_cache_seconds:g} s (Redis not reached)"
        print(f"key ak_{prefix}_… of {args.tenant} revoked; it, its open streams and its capability URLs stop {where}")

    _with_database(settings, run)


async def _announce_revocation(settings: Settings, key_hash: bytes) -> bool:
    """Tell every gateway to forget the key now (best effort: their cache expires anyway)."""
    if not settings.redis_url:
        return False
    from ackflow.live import REVOKED_KEYS_CHANNEL
    from ackflow.services import redis_client

    redis = redis_client(settings)
    try:
        await redis.publish(REVOKED_KEYS_CHANNEL, key_hash.hex())
        return True
    except Exception:
        return False
    finally:
        await redis.aclose()


def _with_database(settings: Settings, work: Callable[[Any], Awaitable[None]]) -> None:
    """Run `work(connection)` on one connection to DATABASE_URL, closed after."""
    from ackflow.db.pool import connect

    settings.require("database_url")

    async def run() -> None:
        connection = await connect(settings.database_url, timeout=settings.connect_timeout_seconds)
        try:
            await work(connection)
        finally:
            await connection.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
