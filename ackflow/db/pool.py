"""The asyncpg pool every role shares, with JSON codecs and one clear error when Postgres is unreachable."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import msgspec

from ackflow.errors import ServiceUnavailable

# What Postgres going away (down, restarting, a dropped connection) looks like to asyncpg; loops
# wait these out. InternalClientError is asyncpg finding a connection in a state a lost server left
# it in ("cannot switch to state ..."): seen when Postgres was killed under load.
POSTGRES_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


def redact_url(url: str) -> str:
    """`scheme://host:port/path` of a URL, without user or password, safe to print."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


async def _init_connection(connection: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name,
            schema="pg_catalog",
            encoder=lambda value: msgspec.json.encode(value).decode(),
            decoder=msgspec.json.decode,
            format="text",
        )


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release a connection to the pool without asyncpg's default reset query.

    The default (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`) costs one more round
    trip on every release, which the profile showed on the accept path. ackflow never leaves session
    state on pooled connections: no SET, no LISTEN (the relays listen on their own connections),
    no session advisory locks (migrations lock on their own connection; idempotency uses
    transaction-scoped locks). asyncpg still rolls back an unfinished transaction before this runs.
    """


async def create_pool(database_url: str, *, size: int = 10, timeout: float = 10.0) -> asyncpg.Pool:
    """Open a pool to `database_url`, or raise ServiceUnavailable naming DATABASE_URL and the address."""
    try:
        pool = await asyncio.wait_for(
            asyncpg.create_pool(
                database_url,
                min_size=1,
                max_size=size,
                init=_init_connection,
                reset=_keep_session,
                command_timeout=timeout,
                timeout=timeout,
            ),
            timeout=timeout + 1,
        )
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ServiceUnavailable(
            f"cannot reach Postgres at {redact_url(database_url)} (DATABASE_URL): {_reason(exc)}"
        ) from None
    assert pool is not None
    return pool


async def connect(database_url: str, *, timeout: float = 10.0) -> asyncpg.Connection:
    """One connection (for LISTEN and migrations), with the same codecs and error as the pool."""
    try:
        connection = await asyncpg.connect(database_url, timeout=timeout)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ServiceUnavailable(
            f"cannot reach Postgres at {redact_url(database_url)} (DATABASE_URL): {_reason(exc)}"
        ) from None
    await _init_connection(connection)
    return connection


def _reason(exc: BaseException) -> str:
    text: Any = str(exc) or type(exc).__name__
    return str(text).splitlines()[0]
