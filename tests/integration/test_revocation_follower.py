"""A gateway forgets revoked keys as announced, even when announcements come faster than it rechecks."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
from redis.asyncio import Redis

from ackflow.errors import Unauthorized
from ackflow.live import REVOKED_KEYS_CHANNEL
from ackflow.tenants import hash_api_key
from gateway.auth import ApiKeyAuthenticator
from gateway.hub import SUBSCRIBER_BUFFER, Hub
from tests.conftest import Tenant
from tests.helpers import assert_eventually


async def test_a_revocation_dropped_while_the_follower_waited_on_postgres_still_ends_the_cached_key(
    pool: asyncpg.Pool, redis: Redis, tenant: Tenant
) -> None:
    authenticator = ApiKeyAuthenticator(pool, cache_seconds=3600)
    bearer = f"Bearer {tenant.api_key}"
    assert await authenticator.authenticate(bearer) is not None  # cached for an hour from here
    busy, free = asyncio.Event(), asyncio.Event()

    async def on_revocation() -> None:  # the recheck of open streams, stuck on a slow Postgres
        busy.set()
        await free.wait()

    async with Hub(redis) as hub, hub.subscribe("a") as fence:
        following = asyncio.create_task(authenticator.follow_revocations(hub, on_revocation))

        async def fence_subscribed() -> bool:
            await redis.publish("a", b"probe")
            return fence.pending > 0

        await assert_eventually(fence_subscribed, message="the fence never heard a probe")

        async def follower_busy() -> bool:
            await redis.publish(REVOKED_KEYS_CHANNEL, b"00")  # an unknown key: forgetting it is harmless
            return busy.is_set()

        await assert_eventually(follower_busy, message="the follower never heard an announcement")
        key_hash = hash_api_key(tenant.api_key)
        await pool.execute("UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1", key_hash)
        for _ in range(SUBSCRIBER_BUFFER):
            await redis.publish(REVOKED_KEYS_CHANNEL, b"00")
        await redis.publish(REVOKED_KEYS_CHANNEL, key_hash.hex())  # past the follower's full buffer
        await redis.publish("a", b"fence")  # handed out after every announcement before it
        while (message := await fence.next(10)) == b"probe":
            pass
        assert message == b"fence"
        free.set()

        async def refused() -> bool:
            try:
                await authenticator.authenticate(bearer)
            except Unauthorized:
                return True
            return False

        await assert_eventually(refused, message="the revoked key is still served from the cache")
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
