"""Per-endpoint concurrency and rate limits, enforced on every send from this process.

Each endpoint gets a semaphore (at most `max_concurrency` attempts in flight) and a token bucket
(at most `rate_limit_per_second` attempts started per second, with a one-second burst). Limits are
read from Postgres and refreshed every few seconds, so a PATCH takes effect without a restart.
With N worker processes an endpoint can see up to N times these figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg

from ackflow.db.queries import sql

REFRESH_SECONDS = 5.0
DEFAULT_CONCURRENCY = 10


@dataclass
class _Limit:
    concurrency: int
    rate: int | None
    semaphore: asyncio.Semaphore
    tokens: float
    refilled_at: float
    read_at: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class EndpointLimiter:
    """Hands out send slots per endpoint."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._limits: dict[uuid.UUID, _Limit] = {}

    @contextlib.asynccontextmanager
    async def slot(self, endpoint_id: uuid.UUID | None) -> AsyncIterator[None]:
        """Wait for a concurrency slot and a rate token of the endpoint (callback URLs are unlimited)."""
        if endpoint_id is None:
            yield
            return
        limit = await self._limit(endpoint_id)
        async with limit.semaphore:
            await self._take_token(limit)
            yield

    async def _limit(self, endpoint_id: uuid.UUID) -> _Limit:
        now = time.monotonic()
        limit = self._limits.get(endpoint_id)
        if limit is not None and now - limit.read_at < REFRESH_SECONDS:
            return limit
        row = await self._pool.fetchrow(sql("endpoint_limits"), [endpoint_id])
        concurrency = row["max_concurrency"] if row else DEFAULT_CONCURRENCY
        rate = row["rate_limit_per_second"] if row else None
        # Other sends to this endpoint may have read it meanwhile: share their limit, never make a second one.
        limit = self._limits.get(endpoint_id)
        if limit is None or limit.concurrency != concurrency:
            limit = _Limit(concurrency, rate, asyncio.Semaphore(concurrency), float(rate or 0), now, now)
            self._limits[endpoint_id] = limit
        limit.rate, limit.read_at = rate, now
        return limit

    async def _take_token(self, limit: _Limit) -> None:
        if limit.rate is None:
            return
        async with limit.lock:  # one waiter at a time, so tokens go out in order
            while True:
                now = time.monotonic()
                limit.tokens = min(float(limit.rate), limit.tokens + (now - limit.refilled_at) * limit.rate)
                limit.refilled_at = now
                if limit.tokens >= 1:
                    limit.tokens -= 1
                    return
                await asyncio.sleep((1 - limit.tokens) / limit.rate)
