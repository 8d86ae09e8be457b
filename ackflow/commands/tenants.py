"""`ackflow tenant ... | key ...`: tenants, their limits and weights, and their API keys."""

from __future__ import annotations

import argparse
from typing import Any

from ackflow.commands import with_database
from ackflow.settings import Settings


def add_tenant_commands(commands: Any) -> None:
    """Add these commands to the `ackflow` parser's subcommands."""
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

    with_database(settings, run)


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

    with_database(settings, run)


def _tenant_set_weight(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.queries import sql
    from ackflow.errors import InvalidInput, NotFound

    if not 1 <= args.weight <= 1000:
        raise InvalidInput("the weight must be between 1 and 1000")

    async def run(connection: Any) -> None:
        if await connection.fetchval(sql("set_tenant_admission_weight"), args.name, args.weight) is None:
            raise NotFound(f"no tenant is named {args.name!r}")
        print(f"tenant {args.name} now has admission weight {args.weight}; the next claim applies it")

    with_database(settings, run)


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

    with_database(settings, run)


def _key_list(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.queries import sql

    async def run(connection: Any) -> None:
        rows = await connection.fetch(sql("list_api_keys"), args.tenant)
        if not rows:
            print(f"no keys for a tenant named {args.tenant!r}")
        for row in rows:
            revoked = f"revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "active"
            print(f"ak_{row['prefix']}_…  created {row['created_at']:%Y-%m-%d %H:%M}  {revoked}")

    with_database(settings, run)


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

    with_database(settings, run)


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
