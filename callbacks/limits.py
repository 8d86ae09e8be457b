"""Endpoint limits shared by every process: how a retry workflow's attempt gets its send slot.

An endpoint's `max_concurrency` counts its deliveries under a live lease (`lease_until`), whoever
holds it; its `rate_limit_per_second` is a token bucket in Postgres (`webhook_endpoint_buckets`,
a one-second burst). The dispatcher takes both in its claim (claim_webhook_deliveries), so what it
claims may be sent at once; a retry attempt takes them here, under the same bucket lock, so with any
number of workers an endpoint sees its limits once, not once a process.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

import asyncpg

from ackflow.contracts import DeliveryState
from ackflow.db.queries import sql

# How soon a full endpoint is asked again for a concurrency slot: doubling up to the most, so many
# retries waiting for one busy endpoint do not poll Postgres in a herd.
SLOT_POLL_SECONDS = (0.2, 2.0)


class EndpointBusy(Exception):
    """No send slot of the endpoint came free in time; the activity fails and Temporal retries it."""


class EndpointSlots:
    """Takes send slots for single attempts, waiting while the endpoint is at its limits."""

    def __init__(self, pool: asyncpg.Pool, *, lease_seconds: float, max_wait_seconds: float = 20.0) -> None:
        self._pool = pool
        self._lease_seconds = lease_seconds
        self._max_wait_seconds = max_wait_seconds

    async def take(self, delivery_id: uuid.UUID, states: Sequence[DeliveryState]) -> bool:
        """Lease the delivery with a send slot of its endpoint, if it is still in one of `states`.

        False if it is no longer in them (someone else attempted or finished it); raises EndpointBusy
        when no slot came free within the wait, so a stalled endpoint never holds an activity long."""
        deadline = time.monotonic() + self._max_wait_seconds
        poll, most = SLOT_POLL_SECONDS
        while True:
            async with self._pool.acquire() as connection, connection.transaction():
                await connection.execute(sql("lock_endpoint_bucket"), delivery_id)
                row = await connection.fetchrow(
                    sql("take_attempt_slot"), delivery_id, list(states), self._lease_seconds
                )
            assert row is not None
            if not row["owned"] or row["taken"]:
                return bool(row["taken"])
            wait = max(row["token_in_seconds"] or 0.0, poll)
            if time.monotonic() + wait > deadline:
                raise EndpointBusy(f"delivery {delivery_id}: its endpoint had no free send slot for a while")
            await asyncio.sleep(wait)
            poll = min(poll * 2, most)
