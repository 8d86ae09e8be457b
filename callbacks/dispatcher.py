"""The webhook dispatcher: makes first attempts (and resends) as soon as a delivery is created.

Woken by NOTIFY on `ackflow_webhooks` (or every poll interval), it claims due deliveries under a
lease (`FOR UPDATE SKIP LOCKED`, so several dispatchers share the work), with all their attempts
need, and attempts them, up to `max_in_flight` at once, without waiting for a batch to finish. One
statement renews the leases of all it has under way; a dispatcher that dies mid-attempt loses its
leases and another re-attempts with the same `webhook-id`. A first attempt that fails
hands the delivery to its durable retry schedule on Temporal; a healthy receiver costs Temporal
nothing, so deliveries are not limited by how fast Temporal completes workflows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from ackflow.aio import wait_for_wake
from ackflow.db.listen import listen_until_stopped
from ackflow.db.queries import sql
from callbacks.attempts import WebhookAttempts

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "ackflow_webhooks"
DELIVERING = "delivering"

StartRetries = Callable[[uuid.UUID, int, float | None], Awaitable[None]]


class WebhookDispatcher:
    """Claims due deliveries and attempts them."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        database_url: str,
        attempts: WebhookAttempts,
        start_retries: StartRetries,
        *,
        batch_size: int = 100,
        max_in_flight: int = 200,
        poll_seconds: float = 1.0,
        lease_seconds: float = 60.0,
    ) -> None:
        self._pool = pool
        self._database_url = database_url
        self._attempts = attempts
        self._start_retries = start_retries
        self._batch_size = batch_size
        self._max_in_flight = max_in_flight
        self._poll_seconds = poll_seconds
        self._lease_seconds = lease_seconds
        self._wake = asyncio.Event()
        self._in_flight: dict[asyncio.Task[None], uuid.UUID] = {}  # attempt -> its delivery

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` is set; attempts under way get a few seconds to finish."""
        listener = asyncio.create_task(
            listen_until_stopped(
                self._database_url, NOTIFY_CHANNEL, self._wake.set, stop, retry_seconds=self._poll_seconds
            )
        )
        keeper = asyncio.create_task(self._keep_leases())
        try:
            while not stop.is_set():
                claimed = 0
                free = self._max_in_flight - len(self._in_flight)
                if free > 0:
                    try:
                        claimed = await self._claim_and_start(min(self._batch_size, free))
                    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                        log.warning("claiming webhook deliveries failed, retrying: %s", exc)
                if claimed == 0 or len(self._in_flight) >= self._max_in_flight:
                    await wait_for_wake(self._wake, stop, self._poll_seconds)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await self._finish_in_flight()  # their leases are kept meanwhile
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _claim_and_start(self, limit: int) -> int:
        rows = await self._pool.fetch(sql("claim_webhook_deliveries"), limit, self._lease_seconds)
        for row in rows:
            task = asyncio.create_task(self._deliver(row))
            self._in_flight[task] = row["id"]
            task.add_done_callback(self._done)
        return len(rows)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self._wake.set()  # a slot is free
        if not task.cancelled() and task.exception() is not None:
            log.warning("webhook delivery task failed (its lease will expire and it is retried): %r", task.exception())

    async def _deliver(self, row: Any) -> None:
        trigger = "manual" if row["single_attempt"] else "first" if row["attempts"] == 0 else "retry"
        outcome = await self._attempts.attempt_claimed(row, trigger=trigger, retry_state=DELIVERING)
        if outcome.state == DELIVERING:  # failed, may be retried: hand it to its durable schedule
            await self._start_retries(row["id"], outcome.attempt, outcome.retry_after)
            await self._pool.execute(sql("mark_delivery_retrying"), row["id"])

    async def _keep_leases(self) -> None:
        """Renew the leases of the deliveries under way (waiting for an endpoint's limits may take longer
        than a lease): only a dispatcher that died lets them run out."""
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            if not self._in_flight:
                continue
            try:
                await self._pool.execute(
                    sql("extend_webhook_leases"), list(self._in_flight.values()), self._lease_seconds
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("renewing the leases of %d webhook deliveries failed: %s", len(self._in_flight), exc)

    async def _finish_in_flight(self, grace_seconds: float = 5.0) -> None:
        if not self._in_flight:
            return
        _, pending = await asyncio.wait(list(self._in_flight), timeout=grace_seconds)
        for task in pending:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pending, return_exceptions=True)
