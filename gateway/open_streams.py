"""The streams open on this gateway: counted against their tenant's limit, ended when their key is revoked.

Every SSE stream, WebSocket and long poll holds a `StreamLease` naming the API key that opened it
(directly, or through a capability token that key minted). When a key is revoked its leases are
marked and their streams woken, and each ends at once. A revocation is noticed two ways:
`ackflow key revoke` announces it on Redis (the gateway then re-checks at once), and every
`auth_cache_seconds` the gateway asks Postgres which keys of its open streams are still active,
so a missed announcement still ends them soon.

SSE streams and WebSockets also count against `ACKFLOW_MAX_STREAMS_PER_TENANT` across every
gateway (see gateway/stream_limit.py); long polls only watch for revocation.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from collections.abc import Callable, Iterable

import asyncpg

from ackflow.db.pool import POSTGRES_ERRORS
from ackflow.db.queries import sql
from ackflow.errors import TooManyRequests
from ackflow.metrics import STREAMS_OPEN
from gateway.hub import Subscription
from gateway.stream_limit import StreamLimit

log = logging.getLogger(__name__)


class StreamLease:
    """One open stream: `revoked` once the key that opened it is revoked; `release()` when it ends."""

    def __init__(
        self,
        tenant_id: uuid.UUID,
        key_id: uuid.UUID,
        on_release: Callable[[StreamLease], None],
        transport: str = "sse",
    ) -> None:
        self.tenant_id = tenant_id
        self.key_id = key_id
        self.transport = transport  # sse | websocket | long_poll: ackflow_streams_open's label
        self.revoked = False
        self.member: str | None = None  # the stream's lease in Redis, when it counts against the limit
        self._subscription: Subscription | None = None
        self._on_release = on_release
        self._released = False

    def watch(self, subscription: Subscription) -> None:
        """The subscription to wake if the key is revoked while the stream waits for a message."""
        self._subscription = subscription
        if self.revoked:
            subscription.wake()

    def revoke(self) -> None:
        self.revoked = True
        if self._subscription is not None:
            self._subscription.wake()  # a stream waiting for a message looks at `revoked` now

    def release(self) -> None:
        """The stream ended (idempotent)."""
        if not self._released:
            self._released = True
            self._on_release(self)


class OpenStreams:
    """This gateway's open streams, by tenant (for the limit) and by key (for revocation)."""

    def __init__(
        self, pool: asyncpg.Pool, limit: StreamLimit, redis_up: Callable[[], bool], *, max_per_tenant: int
    ) -> None:
        self._pool = pool
        self._limit = limit
        self._redis_up = redis_up
        self.max_per_tenant = max_per_tenant
        self._counted: collections.Counter[uuid.UUID] = collections.Counter()
        self._by_key: collections.defaultdict[uuid.UUID, set[StreamLease]] = collections.defaultdict(set)
        self._releasing: set[asyncio.Task[None]] = set()

    async def open(self, tenant_id: uuid.UUID, key_id: uuid.UUID, transport: str = "sse") -> StreamLease:
        """A lease for a new stream (SSE or WebSocket), or TooManyRequests if the tenant has its limit
        open on all gateways."""
        refused = TooManyRequests(
            f"this tenant already has {self.max_per_tenant} open streams; close some first", retry_after=5
        )
        if self._counted[tenant_id] >= self.max_per_tenant:  # this gateway alone has the limit open
            raise refused
        member = await self._limit.acquire(tenant_id, redis_up=self._redis_up())
        if member is None:
            raise refused
        self._counted[tenant_id] += 1
        lease = self.watch_key(tenant_id, key_id, transport)
        lease.member = member
        return lease

    def watch_key(self, tenant_id: uuid.UUID, key_id: uuid.UUID, transport: str = "long_poll") -> StreamLease:
        """A lease that only watches for the key's revocation (a long poll: not counted against the limit)."""
        lease = StreamLease(tenant_id, key_id, self._released, transport)
        self._by_key[key_id].add(lease)
        STREAMS_OPEN.labels(transport=transport).inc()
        return lease

    def revoke(self, key_ids: Iterable[uuid.UUID]) -> None:
        """End every stream opened with one of these keys."""
        for key_id in key_ids:
            for lease in self._by_key.get(key_id, ()):
                lease.revoke()

    async def recheck(self) -> None:
        """Ask Postgres which keys of the open streams are still active, and end the others' streams."""
        key_ids = list(self._by_key)
        if key_ids:
            active = {row["id"] for row in await self._pool.fetch(sql("active_api_keys"), key_ids)}
            self.revoke(key for key in key_ids if key not in active)

    async def run_recheck(self, every_seconds: float) -> None:
        """`recheck` every `every_seconds`, for as long as the gateway runs (revocations missed on Redis)."""
        while True:
            await asyncio.sleep(every_seconds)
            try:
                await self.recheck()
            except POSTGRES_ERRORS as exc:
                log.warning("could not re-check the keys of open streams (%s); retrying", exc)

    def _released(self, lease: StreamLease) -> None:
        STREAMS_OPEN.labels(transport=lease.transport).dec()
        leases = self._by_key.get(lease.key_id)
        if leases is not None:
            leases.discard(lease)
            if not leases:
                del self._by_key[lease.key_id]
        if lease.member is not None:
            self._counted[lease.tenant_id] -= 1
            if self._counted[lease.tenant_id] <= 0:
                del self._counted[lease.tenant_id]
            task = asyncio.create_task(self._limit.release(lease.tenant_id, lease.member))
            self._releasing.add(task)  # kept until done, so it is not collected half-way
            task.add_done_callback(self._releasing.discard)
