"""The relays' expiry sweep: requests still INIT past their `expires_at` end CANCELLED (Expired).

A request that reaches a worker after its expiry is cancelled where it would start (the INIT ->
PROCESSING statement, migration 0019); this sweep ends those that never get that far in time, the
ones waiting for admission behind a full room or admitted while no worker runs, so each ends close
to its expiry, on every channel. Every relay sweeps; the statement skips what another holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from ackflow.db.pool import POSTGRES_ERRORS
from ackflow.db.queries import sql
from ackflow.metrics import STATUS_TRANSITIONS

log = logging.getLogger(__name__)

SWEEP_BATCH = 500


class ExpirySweep:
    def __init__(self, pool: asyncpg.Pool, *, interval_seconds: float = 1.0) -> None:
        self._pool = pool
        self._interval = interval_seconds

    async def run(self, stop: asyncio.Event) -> None:
        """A sweep every interval until `stop`; Postgres going away only fails a sweep."""
        while not stop.is_set():
            try:
                await self.sweep()
            except POSTGRES_ERRORS as exc:
                log.warning("the expiry sweep failed, retrying in %g s: %s", self._interval, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def sweep(self) -> int:
        """Cancel every request expired by now, a batch at a time; return how many. Those holding a
        concurrency key's slot go in statements of their own (expire_requests says why)."""
        total = 0
        for holders in (False, True):
            while True:
                expired = int(await self._pool.fetchval(sql("expire_requests"), SWEEP_BATCH, holders))
                if expired:
                    STATUS_TRANSITIONS.labels(status="CANCELLED").inc(expired)
                    log.info("cancelled %d expired requests", expired)
                total += expired
                if expired < SWEEP_BATCH:
                    break
        return total
