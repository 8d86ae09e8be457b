"""Waking the outbox relays after commits, coalesced, from outside the committing transactions.

A NOTIFY inside a transaction serialises commits database-wide (Postgres holds one lock from
pre-commit to the end of the flush), which capped the accept path. Instead, the gateway calls
`wake()` after each accept commits, and one background task sends at most one NOTIFY per
`interval` on its own connection. A wake lost in a crash only delays: relays also poll.

The first wake after a quiet spell goes out at once, so a lone accept reaches the relay without
delay; only accepts within `interval` of the last wake wait for the next one. Each NOTIFY is a
round trip and a transaction (measured at about a quarter of an accept's CPU when sent every 2 ms
under accept load), and a relay woken every 10 ms is never idle for long under load anyway.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from ackflow.db.listen import OUTBOX_CHANNEL
from ackflow.db.pool import POSTGRES_ERRORS
from ackflow.db.queries import sql

log = logging.getLogger(__name__)


class OutboxWaker:
    """Coalesces many `wake()` calls into a NOTIFY at most every `interval` seconds."""

    def __init__(self, pool: asyncpg.Pool, *, interval: float = 0.010) -> None:
        self._pool = pool
        self._interval = interval
        self._pending = asyncio.Event()

    def wake(self) -> None:
        self._pending.set()

    async def wake_now(self) -> None:
        """One NOTIFY, sent before returning (for callers outside the gateway's loop, and tests)."""
        await self._pool.execute(sql("wake_outbox_relays"), OUTBOX_CHANNEL)

    async def run(self) -> None:
        """Send the coalesced notifications until cancelled."""
        while True:
            await self._pending.wait()
            self._pending.clear()
            try:
                await self.wake_now()
            except POSTGRES_ERRORS as exc:
                log.warning("could not wake the relays (they will poll): %s", exc)
            await asyncio.sleep(self._interval)
