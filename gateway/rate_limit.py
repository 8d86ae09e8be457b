"""Per-tenant rate limit on accepts: a token bucket in Redis, shared by every gateway.

Each tenant may start `rate` requests a second on average, with a burst of `BURST_SECONDS` worth.
The bucket lives in Redis (one Lua script, Redis's own clock), so the limit holds across gateways.
Redis is only a fast path: if it is down the limit is not enforced (logged), rather than refusing
every request. Rates come from `tenants.accept_rate_per_second`, else ACKFLOW_RATE_LIMIT_PER_SECOND.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ackflow.db.queries import sql
from ackflow.errors import TooManyRequests

log = logging.getLogger(__name__)

BURST_SECONDS = 2.0
RATE_CACHE_SECONDS = 10.0
REDIS_TIMEOUT_SECONDS = 0.5

# KEYS[1]: the bucket; ARGV: rate per second, capacity. Returns {allowed, milliseconds until a token}.
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + (now - at) * rate / 1000)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return {allowed, wait}
"""


class AcceptRateLimiter:
    """Checks one accept against the tenant's bucket; raises TooManyRequests when it is empty."""

    def __init__(self, redis: Redis, pool: asyncpg.Pool, default_rate: int) -> None:
        self._script = redis.register_script(_TOKEN_BUCKET)
        self._pool = pool
        self._default_rate = default_rate
        self._rates: dict[uuid.UUID, tuple[int, float]] = {}

    async def check(self, tenant_id: uuid.UUID) -> None:
        rate = await self._rate(tenant_id)
        try:
            allowed, wait_ms = await asyncio.wait_for(
                self._script(keys=[f"ackflow:rate:accept:{tenant_id}"], args=[rate, max(1.0, rate * BURST_SECONDS)]),
                REDIS_TIMEOUT_SECONDS,
            )
        except (TimeoutError, RedisError, OSError) as exc:
            log.warning("accept rate limit not enforced: Redis unavailable (%s)", exc)
            return
        if not int(allowed):
            raise TooManyRequests(
                f"over this tenant's limit of {rate} requests a second; retry after the Retry-After delay",
                retry_after=int(wait_ms) / 1000,
            )

    async def _rate(self, tenant_id: uuid.UUID) -> int:
        now = time.monotonic()
        cached = self._rates.get(tenant_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        configured = await self._pool.fetchval(sql("tenant_accept_rate"), tenant_id)
        rate = int(configured or self._default_rate)
        if len(self._rates) > 10_000:
            self._rates.clear()
        self._rates[tenant_id] = (rate, now + RATE_CACHE_SECONDS)
        return rate
