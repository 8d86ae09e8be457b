"""Per-tenant open-stream limits that hold across every gateway process, through Redis.

Each open stream holds a lease: a member of its tenant's sorted set in Redis, scored by when it
expires. Opening a stream drops the expired leases, counts the rest and adds its own, in one script,
so two gateways cannot both take the last slot. Each gateway refreshes the leases of its open
streams every third of their lifetime and removes a lease when its stream ends, so the streams of
a gateway that crashed stop counting within `lease_seconds`. Scores are Redis's own clock, so
gateways' clocks need not agree.

Redis is a fast path: while it cannot be reached the limit fails open (each gateway still holds
its own streams to the limit). A refresh adds back any lease Redis lost, so a Redis restart is
corrected within one refresh.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
REFRESH_CHUNK = 1000  # leases refreshed by one script call
KEY_FORMAT = "ackflow:streams:{tenant}"

# KEYS[1]: the tenant's set; ARGV: lease seconds, limit, member. 1 if taken, 0 if the tenant is full.
ACQUIRE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])))
return 1
"""

# KEYS[1]: the tenant's set; ARGV: lease seconds, then the members this gateway holds.
REFRESH = """
local now = redis.call('TIME')
local expires = tonumber(now[1]) + tonumber(now[2]) / 1e6 + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], expires, ARGV[i]) end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])))
return 0
"""


class StreamLimit:
    """Leases of open streams, `limit` per tenant across all gateways sharing this Redis."""

    def __init__(self, redis: Redis, limit: int, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self._redis = redis
        self.limit = limit
        self.lease_seconds = lease_seconds
        self._gateway = uuid.uuid4().hex  # members are unique across gateways
        self._held: collections.defaultdict[uuid.UUID, set[str]] = collections.defaultdict(set)
        self._acquire = redis.register_script(ACQUIRE)
        self._refresh = redis.register_script(REFRESH)

    async def acquire(self, tenant_id: uuid.UUID, *, redis_up: bool = True) -> str | None:
        """A lease for a new stream of the tenant, or None if the tenant holds `limit` already.

        Fails open (a lease only this gateway knows of) when Redis is down or `redis_up` says so.
        """
        member = f"{self._gateway}:{uuid.uuid4().hex}"
        if redis_up:
            try:
                taken = await self._acquire(keys=[_key(tenant_id)], args=[self.lease_seconds, self.limit, member])
            except (RedisError, OSError) as exc:
                log.warning("stream limit not checked across gateways (Redis: %s); allowing the stream", exc)
            else:
                if not taken:
                    return None
        self._held[tenant_id].add(member)
        return member

    async def release(self, tenant_id: uuid.UUID, member: str) -> None:
        """Give the lease back (best effort: if Redis is unreachable it expires by itself)."""
        held = self._held.get(tenant_id)
        if held is not None:
            held.discard(member)
            if not held:
                del self._held[tenant_id]
        try:
            await self._redis.zrem(_key(tenant_id), member)
        except (RedisError, OSError):
            pass

    async def refresh(self) -> None:
        """Extend every lease this gateway holds (and add back any that Redis lost)."""
        for tenant_id, members in list(self._held.items()):
            held = list(members)
            for start in range(0, len(held), REFRESH_CHUNK):  # one short script at a time: Redis runs one at once
                await self._refresh(
                    keys=[_key(tenant_id)], args=[self.lease_seconds, *held[start : start + REFRESH_CHUNK]]
                )

    async def run(self) -> None:
        """Refresh the leases every third of their lifetime, for as long as the gateway runs."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                log.warning("stream leases not refreshed (Redis: %s); retrying", exc)


def _key(tenant_id: uuid.UUID) -> str:
    return KEY_FORMAT.format(tenant=tenant_id)
