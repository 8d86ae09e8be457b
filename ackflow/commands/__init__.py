"""The `ackflow` command's one-shot subcommands, each on one connection to Postgres (`with_database`).

`ackflow.cli` builds the parser and runs the long-running roles; `operations` adds migrate, prune,
outbox, status and requests show, `tenants` the tenant and key commands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ackflow.settings import Settings


def with_database(settings: Settings, work: Callable[[Any], Awaitable[None]]) -> None:
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
