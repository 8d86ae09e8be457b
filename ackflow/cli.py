"""The `ackflow` command: the development stack and each production role.

    ackflow dev [--state-dir .ackflow] [--port 8000]   everything, on embedded servers
    ackflow gateway | relay | worker                     one production role, configured by env vars
    ackflow migrate                                      apply database migrations
    ackflow tenant create NAME | set-rate NAME N         a tenant and its first API key (printed once); its rate
    ackflow key create TENANT | list TENANT | revoke PREFIX   API keys

Errors ackflow expects (bad config, a service down, a port taken) are one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from ackflow.errors import AckflowError
from ackflow.settings import Settings

log = logging.getLogger("ackflow")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `ackflow` console script."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        args.run(args, settings)
    except AckflowError as exc:
        print(f"ackflow: error: {exc}", file=sys.stderr)
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
    ):
        commands.add_parser(name, help=text).set_defaults(run=run)

    tenant = commands.add_parser("tenant", help="manage tenants")
    tenant_commands = tenant.add_subparsers(dest="tenant_command", required=True, metavar="ACTION")
    create = tenant_commands.add_parser("create", help="create a tenant and print its first API key")
    create.add_argument("name")
    create.set_defaults(run=_tenant_create)
    set_rate = tenant_commands.add_parser("set-rate", help="set a tenant's accept rate limit (requests a second)")
    set_rate.add_argument("name")
    set_rate.add_argument("rate", type=int, help="requests a second; 0 returns to ACKFLOW_RATE_LIMIT_PER_SECOND")
    set_rate.set_defaults(run=_tenant_set_rate)

    key = commands.add_parser("key", help="manage API keys")
    key_commands = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    key_create = key_commands.add_parser("create", help="a new API key for a tenant (printed once)")
    key_create.add_argument("tenant")
    key_create.set_defaults(run=_key_create)
    key_list = key_commands.add_parser("list", help="a tenant's keys: prefix, created, revoked")
    key_list.add_argument("tenant")
    key_list.set_defaults(run=_key_list)
    key_revoke = key_commands.add_parser("revoke", help="revoke a key by its prefix, on every gateway at once")
    key_revoke.add_argument("prefix")
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


def _dev(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.dev import run_dev

    run_dev(args.state_dir, args.port, settings)


def _gateway(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.roles import run_gateway

    settings.require("database_url", "redis_url")

    async def role(stop: asyncio.Event) -> None:
        from ackflow.services import open_services

        async with open_services(settings, redis=True, temporal=False) as services:
            await run_gateway(settings, stop, pool=services.pool, redis=services.redis, tune_gc=True)

    run_until_signalled(role)


def _relay(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.roles import run_relay
    from ackflow.services import open_services

    settings.require("database_url", "redis_url", "temporal_address")

    async def role(stop: asyncio.Event) -> None:
        async with open_services(settings, redis=True, temporal=True) as services:
            await run_relay(settings, stop, pool=services.pool, client=services.temporal, redis=services.redis)

    run_until_signalled(role)


def _worker(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.handlers import load_handler_modules
    from ackflow.roles import run_worker
    from ackflow.services import open_services

    settings.require("database_url", "temporal_address", "handler_modules")
    registry = load_handler_modules(settings.handler_modules)

    async def role(stop: asyncio.Event) -> None:
        async with open_services(settings, redis=False, temporal=True) as services:
            await run_worker(settings, stop, pool=services.pool, client=services.temporal, registry=registry)

    run_until_signalled(role)


def _migrate(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.migrate import migrate
    from ackflow.db.pool import connect

    settings.require("database_url")

    async def run() -> None:
        connection = await connect(settings.database_url, timeout=settings.connect_timeout_seconds)
        try:
            applied = await migrate(connection)
        finally:
            await connection.close()
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "none (up to date)"
        print(f"migrations applied: {names}")

    asyncio.run(run())


def _tenant_create(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.pool import connect
    from ackflow.errors import Conflict
    from ackflow.tenants import create_tenant

    settings.require("database_url")

    async def run() -> None:
        import asyncpg

        connection = await connect(settings.database_url, timeout=settings.connect_timeout_seconds)
        try:
            new_key = await create_tenant(connection, args.name)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"a tenant named {args.name!r} already exists") from None
        finally:
            await connection.close()
        print(f"tenant {args.name} created (id {new_key.tenant_id})")
        print(f"API key (shown once, store it now): {new_key.key}")

    asyncio.run(run())


def _tenant_set_rate(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.pool import connect
    from ackflow.db.queries import sql
    from ackflow.errors import InvalidInput, NotFound

    settings.require("database_url")
    if args.rate < 0:
        raise InvalidInput("the rate must be 0 (the default) or more requests a second")

    async def run() -> None:
        connection = await connect(settings.database_url, timeout=settings.connect_timeout_seconds)
        try:
            updated = await connection.fetchval(sql("set_tenant_accept_rate"), args.name, args.rate or None)
        finally:
            await connection.close()
        if updated is None:
            raise NotFound(f"no tenant is named {args.name!r}")
        limit = f"{args.rate} requests a second" if args.rate else "the default (ACKFLOW_RATE_LIMIT_PER_SECOND)"
        print(f"tenant {args.name} may now accept {limit}; gateways apply it within 10 s")

    asyncio.run(run())


def _key_create(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.errors import NotFound
    from ackflow.tenants import create_api_key

    async def run(connection: Any) -> None:
        tenant_id = await connection.fetchval("SELECT id FROM tenants WHERE name = $1", args.tenant)
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
    from ackflow.errors import NotFound

    prefix = args.prefix.removeprefix("ak_").split("_")[0]

    async def run(connection: Any) -> None:
        key_hash = await connection.fetchval(sql("revoke_api_key"), prefix)
        if key_hash is None:
            raise NotFound(f"no active key has the prefix {prefix!r}")
        announced = await _announce_revocation(settings, bytes(key_hash))
        where = "on every gateway now" if announced else f"within {settings.auth_cache_seconds:g} s (Redis not reached)"
        print(f"key ak_{prefix}_… revoked; it stops working {where}")

    _with_database(settings, run)


async def _announce_revocation(settings: Settings, key_hash: bytes) -> bool:
    """Tell every gateway to forget the key now (best effort: their cache expires anyway)."""
    if not settings.redis_url:
        return False
    from redis.asyncio import Redis

    from ackflow.live import REVOKED_KEYS_CHANNEL

    redis = Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        await redis.publish(REVOKED_KEYS_CHANNEL, key_hash.hex())
        return True
    except Exception:
        return False
    finally:
        await redis.aclose()


def _with_database(settings: Settings, work: Callable[[Any], Awaitable[None]]) -> None:
    """Run `work(connection)` on one connection to DATABASE_URL."""
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
