"""Holding a LISTEN connection open: wake a loop on NOTIFY, reconnecting after any failure.

Loops that use it also poll on an interval, so a notification lost while reconnecting only delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from ackflow.db.pool import connect

log = logging.getLogger(__name__)

# The NOTIFY channels ackflow's loops LISTEN on. The triggers of migrations 0001 and 0003 spell them
# too (tests/unit/test_sql_names.py holds those to these).
OUTBOX_CHANNEL = "ackflow_outbox"  # outbox rows to relay: the relays' (ackflow.db.waker wakes them after accepts)
WEBHOOKS_CHANNEL = "ackflow_webhooks"  # webhook deliveries due: the dispatchers'


async def listen_until_stopped(
    database_url: str, channel: str, on_notify: Callable[[], None], stop: asyncio.Event, *, retry_seconds: float
) -> None:
    """Call `on_notify` for every NOTIFY on `channel` (and once after each (re)connect) until `stop`."""
    while not stop.is_set():
        connection: asyncpg.Connection | None = None
        try:
            connection = await connect(database_url)
            await connection.add_listener(channel, lambda *_: on_notify())
            on_notify()  # catch up on anything committed while we were not listening
            while not stop.is_set() and not connection.is_closed():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), retry_seconds)
        except Exception as exc:
            log.warning("LISTEN %s connection lost, reconnecting: %s", channel, exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_seconds)
        finally:
            if connection is not None and not connection.is_closed():
                with contextlib.suppress(Exception):
                    await connection.close(timeout=2)
