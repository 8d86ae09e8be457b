"""The accept rate limiter against real Redis: leases of tokens, never more than the bucket holds."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from redis.asyncio import Redis

from ackflow.errors import TooManyRequests
from gateway.rate_limit import BURST_SECONDS, LEASE_SECONDS, AcceptRateLimiter


async def script_calls(redis: Redis) -> int:
    """How many times Redis has run a script (each runs several commands inside)."""
    stats = await redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("eval", "evalsha"))


async def accepted_of(limiter: AcceptRateLimiter, tenant_id: uuid.UUID, attempts: int) -> int:
    """Run `attempts` checks at once; how many were allowed."""
    outcomes = await asyncio.gather(*(limiter.check(tenant_id) for _ in range(attempts)), return_exceptions=True)
    assert all(o is None or isinstance(o, TooManyRequests) for o in outcomes), outcomes
    return sum(o is None for o in outcomes)


async def test_a_concurrent_burst_gets_the_bucket_and_no_more_with_a_fraction_of_the_redis_calls(
    redis: Redis, pool: asyncpg.Pool
) -> None:
    rate = 400
    limiter = AcceptRateLimiter(redis, pool, default_rate=rate)
    tenant_id = uuid.uuid4()
    calls_before = await script_calls(redis)

    accepted = await accepted_of(limiter, tenant_id, 1200)

    capacity = int(rate * BURST_SECONDS)
    assert capacity <= accepted <= capacity + rate  # the burst, plus what refills while the test runs (< 1 s)
    leases = await script_calls(redis) - calls_before
    # Leases of rate x LEASE_SECONDS = 20 tokens; some come short (a bucket refilling token by token).
    assert leases < accepted / (rate * LEASE_SECONDS) * 1.5, "one script call per lease, not per accept"


async def test_an_empty_bucket_answers_429_with_the_wait_for_a_token_without_asking_redis_again(
    redis: Redis, pool: asyncpg.Pool
) -> None:
    limiter = AcceptRateLimiter(redis, pool, default_rate=1)
    tenant_id = uuid.uuid4()
    assert await accepted_of(limiter, tenant_id, 2) == 2  # the burst: two seconds' worth of 1/s
    calls_before = await script_calls(redis)

    refusals = []
    for _ in range(20):
        try:
            await limiter.check(tenant_id)
        except TooManyRequests as exc:
            refusals.append(exc.retry_after)

    assert len(refusals) == 20
    assert all(0 < wait <= 1.0 for wait in refusals)
    assert await script_calls(redis) - calls_before == 1, "once found empty, the bucket is not asked again"
    await asyncio.sleep(max(refusals[-1], 0.0) + 0.05)  # wait out the Retry-After it gave: time refills the bucket
    await limiter.check(tenant_id)  # a token is due again


async def test_tenants_have_their_own_buckets(redis: Redis, pool: asyncpg.Pool) -> None:
    limiter = AcceptRateLimiter(redis, pool, default_rate=1)
    first, second = uuid.uuid4(), uuid.uuid4()

    assert await accepted_of(limiter, first, 5) == 2
    assert await accepted_of(limiter, second, 5) == 2
