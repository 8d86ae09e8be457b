"""The webhook dispatcher: makes first attempts (and resends) as soon as a delivery is created.

Run by the shared claim loop (ackflow/claim_loop.py: woken by NOTIFY on `ackflow_webhooks`, a poll
interval, or a freed slot), each step claims, up to `max_in_flight` at once:

- hand-offs due (`handoff`, `resending`): deliveries whose retry workflow is to be started, or, for
  a resend, signalled to attempt now. A hand-off that fails (Temporal unreachable) is postponed, never
  dropped; one whose dispatcher died is claimed again when its claim runs out, and handed off again,
  not attempted again;
- due deliveries, only as many as each endpoint may send now (its max_concurrency and rate limit,
  held in Postgres for every process), round-robin between endpoints and tenants, so one tenant's
  backlog or dead endpoint never delays another's first attempts (claim_webhook_deliveries).

One statement renews the leases of all attempts under way; a dispatcher that dies mid-attempt loses
them and another re-attempts with the same `webhook-id`. A first attempt that fails is recorded as
`handoff` and handed to its durable retry schedule on Temporal; a healthy receiver costs Temporal
nothing, so deliveries are not limited by how fast Temporal completes workflows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Coroutine
from typing import Any, Protocol

import asyncpg

from ackflow.claim_loop import ClaimLoop
from ackflow.contracts import DeliveryState
from ackflow.db.listen import WEBHOOKS_CHANNEL
from ackflow.db.pool import POSTGRES_ERRORS
from ackflow.db.queries import sql
from ackflow.logs import log_context
from ackflow.tracing import in_trace_of
from callbacks.attempts import Ownership, WebhookAttempts

log = logging.getLogger(__name__)

# A tenant's requests' own callback URLs share one lane: this many attempts of theirs at once.
CALLBACK_URL_CONCURRENCY = 50


class StartRetries(Protocol):
    """Starts (or, with `attempt_now`, signals) a delivery's retry workflow: TemporalRetryStarter."""

    def __call__(
        self, delivery_id: uuid.UUID, attempts_done: int, retry_after: float | None, *, attempt_now: bool = False
    ) -> Awaitable[None]: ...


class WebhookDispatcher:
    """Claims due deliveries and hand-offs, and attempts or hands them off."""

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
        handoff_retry_seconds: float = 5.0,
    ) -> None:
        self._pool = pool
        self._attempts = attempts
        self._start_retries = start_retries
        self._batch_size = batch_size
        self._max_in_flight = max_in_flight
        self._lease_seconds = lease_seconds
        self._handoff_retry_seconds = handoff_retry_seconds
        # What a dispatcher's attempt owns: a claimed delivery; a failure it hands off, and holds for a lease.
        self._owner = Ownership((DeliveryState.DELIVERING,), DeliveryState.HANDOFF, hold_seconds=lease_seconds)
        self._loop = ClaimLoop("webhook dispatcher", database_url, WEBHOOKS_CHANNEL, poll_seconds=poll_seconds)
        self._lane_cursor: uuid.UUID | None = None  # where the next claim's round of lanes starts
        self._in_flight: dict[asyncio.Task[None], uuid.UUID] = {}  # attempt or hand-off -> its delivery
        self._handoffs: set[asyncio.Task[None]] = set()  # the hand-offs among them

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` is set; work under way gets a few seconds to finish."""
        keeper = asyncio.create_task(self._keep_leases())
        try:
            await self._loop.run(stop, self._step)
        finally:
            await self._finish_in_flight()  # their leases are kept meanwhile
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _step(self) -> bool:
        """Claim hand-offs, then deliveries, into the free slots; True if there is probably more to claim
        now (a claim came back full, or lanes are left in this round)."""
        free = min(self._batch_size, self._max_in_flight - len(self._in_flight))
        if free <= 0:
            return False  # a finished task wakes the loop
        # Hand-offs wait on Temporal, which may be away: they never take more than a quarter of the slots.
        handoff_room = min(free, max(1, self._max_in_flight // 4) - len(self._handoffs))
        if handoff_room > 0:
            for row in await self._pool.fetch(sql("claim_webhook_handoffs"), handoff_room, self._lease_seconds):
                work = self._hand_off(row["id"], DeliveryState(row["state"]), row["attempts"], row["retry_after"])
                self._handoffs.add(self._start(work, row["id"]))
                free -= 1
        claimed = await self._claim_deliveries(free) if free > 0 else []
        for row in claimed:
            self._start(self._deliver(row), row["id"])
        return free <= 0 or len(claimed) == free or self._lane_cursor is not None

    async def _claim_deliveries(self, limit: int) -> list[asyncpg.Record]:
        """One round of lanes from the cursor, locked for this transaction, then what they may send now."""
        async with self._pool.acquire() as connection, connection.transaction():
            lanes = [row["lane"] for row in await connection.fetch(sql("lock_webhook_lanes"), self._lane_cursor, limit)]
            self._lane_cursor = max(lanes) if len(lanes) >= limit else None  # the rest next time, then wrap
            if not lanes:
                return []
            return list(
                await connection.fetch(
                    sql("claim_webhook_deliveries"), lanes, limit, self._lease_seconds, CALLBACK_URL_CONCURRENCY
                )
            )

    def _start(self, work: Coroutine[Any, Any, None], delivery_id: uuid.UUID) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._in_flight[task] = delivery_id
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        delivery_id = self._in_flight.pop(task, None)
        self._handoffs.discard(task)
        self._loop.wake()  # a slot is free
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "webhook delivery %s: its attempt or hand-off failed; it is claimed again when its claim runs out: %r",
                delivery_id,
                task.exception(),
            )

    async def _deliver(self, row: Any) -> None:
        with log_context(delivery_id=row["id"], request_id=row.get("request_id"), tenant=row.get("tenant_id")):
            await self._deliver_logged(row)

    async def _deliver_logged(self, row: Any) -> None:
        trigger = "manual" if row["single_attempt"] else "first" if row["attempts"] == 0 else "retry"
        outcome = await self._attempts.attempt_claimed(row, trigger=trigger, owner=self._owner)
        if outcome.recorded and outcome.state == DeliveryState.HANDOFF:  # failed, may be retried
            with in_trace_of(row.get("trace_context")):  # the retry workflow's spans join the request's trace
                await self._hand_off(row["id"], DeliveryState.HANDOFF, outcome.attempt, outcome.retry_after)

    async def _hand_off(
        self, delivery_id: uuid.UUID, state: DeliveryState, attempts: int, retry_after: float | None
    ) -> None:
        """Give the delivery to its durable retry schedule (signalled to attempt now for a resend)."""
        try:
            await self._start_retries(delivery_id, attempts, retry_after, attempt_now=state == DeliveryState.RESENDING)
        except Exception as exc:  # Temporal unreachable or refusing: the delivery stays due for a hand-off
            log.warning("handing webhook delivery %s to its retry workflow failed, retrying soon: %r", delivery_id, exc)
            await self._pool.execute(sql("postpone_webhook_handoff"), delivery_id, state, self._handoff_retry_seconds)
            return
        await self._pool.execute(sql("mark_delivery_retrying"), delivery_id, state, attempts)

    async def _keep_leases(self) -> None:
        """Renew the leases of the attempts under way: only a dispatcher that died lets them run out."""
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            if not self._in_flight:
                continue
            try:
                await self._pool.execute(
                    sql("extend_webhook_leases"), list(self._in_flight.values()), self._lease_seconds
                )
            except POSTGRES_ERRORS as exc:
                log.warning("renewing the leases of %d webhook deliveries failed: %s", len(self._in_flight), exc)

    async def _finish_in_flight(self, grace_seconds: float = 5.0) -> None:
        if not self._in_flight:
            return
        _, pending = await asyncio.wait(list(self._in_flight), timeout=grace_seconds)
        for task in pending:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pending, return_exceptions=True)
