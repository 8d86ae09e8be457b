"""Per-tenant rate limit on accepts: a token bucket in Redis, shared by every gateway.

Each tenant may start `rate` requests a second on average, with a burst of `BURST_SECONDS` worth.
The bucket lives in Redis (one Lua script, Redis's own clock), so the limit holds across gateways.
A gateway takes tokens in small leases (up to `LEASE_SECONDS` of the tenant's rate, spent within
`LEASE_TTL_SECONDS`, else dropped) rather than one Redis round trip per accept: the round trip was
a measurable share of the accept path's CPU. Tokens are taken before they are spent, so the limit
is never exceeded; a lease left unspent only lowers it for an instant. Once the bucket is found
empty, the gateway answers 429 without asking Redis again until a token is due.
Redis is only a fast path: if it is down the limit is not enforced (logged; Redis is asked again
after each lease's worth of accepts), rather than refusing every request. Rates come from
`tenants.accept_rate_per_second`, else ACKFLOW_RATE_LIMIT_PER_SECOND.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ackflow.db.queries import sql
from ackflow.errors import InvalidInput, TooManyRequests

log = logging.getLogger(__name__)

BURST_SECONDS = 2.0
LEASE_SECONDS = 0.05
LEASE_TTL_SECONDS = 0.5
MAX_LEASE = 100
RATE_CACHE_SECONDS = 10.0
REDIS_TIMEOUT_SECONDS = 0.5
MAX_TENANTS_CACHED = 10_000

# KEYS[1]: the bucket; ARGV: rate per second, capacity, tokens wanted.
# Returns {tokens granted (up to wanted, 0 if empty), milliseconds until a token when none granted}.
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + (now - at) * rate / 1000)
local granted = math.min(wanted, math.floor(tokens))
local wait = 0
if granted >= 1 then
  tokens = tokens - granted
else
  granted = 0
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return {granted, wait}
"""


@dataclass
class _Lease:
    """Tokens this gateway holds for one tenant: spendable until `expires`; none left until `empty_until`."""

    tokens: int = 0
    expires: float = 0.0
    empty_until: float = 0.0
    refill: asyncio.Lock = field(default_factory=asyncio.Lock)


def _capacity(rate: int) -> float:
    return max(1.0, rate * BURST_SECONDS)


class AcceptRateLimiter:
    """Checks one accept against the tenant's bucket; raises TooManyRequests when it is empty."""

    def __init__(self, redis: Redis, pool: asyncpg.Pool, default_rate: int) -> None:
        self._script = redis.register_script(_TOKEN_BUCKET)
        self._pool = pool
        self._default_rate = default_rate
        self._rates: dict[uuid.UUID, tuple[int, float]] = {}
        self._leases: dict[uuid.UUID, _Lease] = {}

    async def check(self, tenant_id: uuid.UUID, cost: int = 1) -> None:
        """Spend `cost` tokens (a batch's items) or raise TooManyRequests; InvalidInput if `cost` is more
        than the tenant's whole burst, which no wait would cover."""
        lease = self._lease(tenant_id)
        if self._spend(lease, cost):
            return
        async with lease.refill:  # one refill at a time per tenant; the others then spend from it
            if self._spend(lease, cost):
                return
            rate = await self._rate(tenant_id)
            if cost > _capacity(rate):
                raise InvalidInput(
                    f"{cost} requests at once is more than this tenant's burst of {_capacity(rate):g}"
                    f" ({rate} a second); send smaller batches",
                    errors=[{"field": "items", "in": "body", "message": "too many for the rate limit"}],
                )
            await self._refill(tenant_id, lease, rate, cost)
            if not self._spend(lease, cost):
                raise self._refusal(rate, lease, cost)

    def _spend(self, lease: _Lease, cost: int) -> bool:
        """Take `cost` leased tokens if there are as many (no await: atomic on the event loop)."""
        now = time.monotonic()
        if lease.tokens >= cost and lease.expires > now:
            lease.tokens -= cost
            return True
        return False

    async def _refill(self, tenant_id: uuid.UUID, lease: _Lease, rate: int, cost: int) -> None:
        now = time.monotonic()
        if lease.empty_until > now:
            return
        held = lease.tokens if lease.expires > now else 0
        wanted = max(1, min(MAX_LEASE, int(rate * LEASE_SECONDS)), cost - held)
        try:
            granted, wait_ms = await asyncio.wait_for(
                self._script(keys=[f"ackflow:rate:accept:{tenant_id}"], args=[rate, _capacity(rate), wanted]),
                REDIS_TIMEOUT_SECONDS,
            )
        except (TimeoutError, RedisError, OSError) as exc:
            # Let a lease's worth through unchecked, then ask again: accepts go on, and a dead Redis is
            # asked once per tenant per lease, not once per accept (each ask may wait out the timeout).
            log.warning("accept rate limit not enforced: Redis unavailable (%s)", exc)
            granted, wait_ms = wanted, 0
        now = time.monotonic()
        lease.tokens, lease.expires = held + int(granted), now + LEASE_TTL_SECONDS
        lease.empty_until = now + int(wait_ms) / 1000 if not int(granted) else 0.0

    def _refusal(self, rate: int, lease: _Lease, cost: int) -> TooManyRequests:
        short = max(0, cost - lease.tokens)  # tokens still missing: they come at `rate` a second
        return TooManyRequests(
            f"over this tenant's limit of {rate} requests a second; retry after the Retry-After delay",
            retry_after=max(0.001, lease.empty_until - time.monotonic(), short / rate if cost > 1 else 0.0),
        )

    def _lease(self, tenant_id: uuid.UUID) -> _Lease:
        lease = self._leases.get(tenant_id)
        if lease is None:
            if len(self._leases) > MAX_TENANTS_CACHED:
                self._leases = {t: held for t, held in self._leases.items() if held.refill.locked()}
            lease = self._leases[tenant_id] = _Lease()
        return lease

    async def _rate(self, tenant_id: uuid.UUID) -> int:
        now = time.monotonic()
        cached = self._rates.get(tenant_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        configured = await self._pool.fetchval(sql("tenant_accept_rate"), tenant_id)
        rate = int(configured or self._default_rate)
        if len(self._rates) > MAX_TENANTS_CACHED:
            self._rates.clear()
        self._rates[tenant_id] = (rate, now + RATE_CACHE_SECONDS)
        return rate
