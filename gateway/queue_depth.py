"""Per-tenant bound on the requests waiting to start: beyond it, accepts answer 429.

A backlog that can never drain is refused early instead of growing for ever. "Waiting" is every
request still INIT: waiting for admission, for its concurrency key, for its scheduled time, or for a
worker. Each gateway counts a tenant's waiting requests at most once a `recount_seconds` (a count that
stops at the bound, on requests_tenant_status_idx, so it costs at most the bound's index entries), and
adds its own accepts since; so the bound is held to within what other gateways accept in that time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import asyncpg

from ackflow.db.queries import sql
from ackflow.errors import TooManyRequests

RETRY_AFTER_SECONDS = 5.0  # a full queue drains at the pace of work, not of a token bucket: no hammering
MAX_TENANTS_CACHED = 10_000


@dataclass
class _Count:
    waiting: int = 0
    added: int = 0  # accepted here since the count
    expires: float = 0.0
    recount: asyncio.Lock = field(default_factory=asyncio.Lock)


class QueueDepthGuard:
    """Raises TooManyRequests when a tenant's waiting requests, with those about to be added, pass `limit`."""

    def __init__(self, pool: asyncpg.Pool, limit: int, *, recount_seconds: float = 1.0) -> None:
        self._pool = pool
        self._limit = limit
        self._recount_seconds = recount_seconds
        self._counts: dict[uuid.UUID, _Count] = {}

    async def check(self, tenant_id: uuid.UUID, adding: int = 1) -> None:
        count = self._count(tenant_id)
        if count.expires <= time.monotonic():
            async with count.recount:  # one count at a time per tenant; the others use it
                if count.expires <= time.monotonic():
                    waiting = await self._pool.fetchval(sql("tenant_waiting_requests"), tenant_id, self._limit + 1)
                    count.waiting, count.added = int(waiting), 0
                    count.expires = time.monotonic() + self._recount_seconds
        if count.waiting + count.added + adding > self._limit:
            raise TooManyRequests(
                f"this tenant has {count.waiting + count.added} requests waiting to start, and may have at most"
                f" {self._limit}; retry once some have started",
                retry_after=RETRY_AFTER_SECONDS,
            )
        count.added += adding

    def _count(self, tenant_id: uuid.UUID) -> _Count:
        count = self._counts.get(tenant_id)
        if count is None:
            if len(self._counts) > MAX_TENANTS_CACHED:
                self._counts = {t: held for t, held in self._counts.items() if held.recount.locked()}
            count = self._counts[tenant_id] = _Count()
        return count
