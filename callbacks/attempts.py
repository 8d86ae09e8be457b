"""One attempt of one delivery, performed and recorded: shared by the dispatcher (first attempts,
resends, tests) and by the retry workflow's activity (attempts 2 to 8).

An attempt also keeps the endpoint's health: a success clears `failing_since` (successes are
recorded many to a statement: callbacks/successes.py); a failure sets it
if unset; `410 Gone`, or failing continuously for longer than `disable_after` (5 days by default),
disables the endpoint and records a `webhook.endpoint_disabled` event. Times come from the caller
(`now`), so the retry workflow can run on Temporal's clock (and its time-skipping tests).

An attempt is recorded only if the delivery is still in a state its attempter owns, with the attempt
count it read (compare-and-set), so the dispatcher and a retry workflow, or two dispatchers after a
lease ran out, never both record an attempt: the late one's changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from ackflow.contracts import ON_RETRY_SCHEDULE, WEBHOOK_RETRY_SCHEDULE_SECONDS, DeliveryState
from ackflow.db.queries import sql
from ackflow.timestamps import wire_timestamp
from ackflow.tracing import inject
from ackflow.webhook_secrets import new_webhook_secret
from callbacks.attempt_spans import attempt_span, record_attempt_outcome
from callbacks.limits import EndpointSlots
from callbacks.sender import AttemptResult, WebhookSender
from callbacks.successes import Success, SuccessRecorder


@dataclass(frozen=True)
class AttemptOutcome:
    """The delivery's state after the attempt, and the receiver's Retry-After if it gave one.

    `recorded` is False when the attempt was not recorded: the delivery had moved on (another attempter
    recorded first, or it left the states this one owned); `state` is then as that left it."""

    state: DeliveryState
    attempt: int
    retry_after: float | None = None
    recorded: bool = True


@dataclass(frozen=True)
class Ownership:
    """Who attempts: the states the delivery must still be in for the attempt to be recorded, the state
    a failure that may be retried leaves it in, and how long that state stays the attempter's."""

    states: tuple[DeliveryState, ...]
    retry_state: DeliveryState
    hold_seconds: float = 0.0


# The retry workflow's attempts: a delivery on its retry schedule, which stays on it after a failure.
ON_SCHEDULE = Ownership(ON_RETRY_SCHEDULE, DeliveryState.RETRYING)


class WebhookAttempts:
    """Performs delivery attempts: sign with the current secrets, send within limits, record."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        sender: WebhookSender,
        slots: EndpointSlots,
        *,
        disable_after: timedelta,
        max_attempts: int = len(WEBHOOK_RETRY_SCHEDULE_SECONDS) + 1,
    ) -> None:
        self._pool = pool
        self._max_attempts = max_attempts
        self._sender = sender
        self._slots = slots
        self._disable_after = disable_after
        self._successes = SuccessRecorder(pool)

    async def attempt(
        self, delivery_id: uuid.UUID, *, trigger: str, now: datetime | None = None, owner: Ownership = ON_SCHEDULE
    ) -> AttemptOutcome:
        """Attempt the delivery once, if it is in a state `owner` owns, within its endpoint's limits."""
        if not await self._slots.take(delivery_id, owner.states):
            return await self._current(delivery_id)
        row = await self._pool.fetchrow(sql("delivery_for_attempt"), delivery_id)
        if row is None:
            return AttemptOutcome(DeliveryState.FAILED, 0, recorded=False)
        return await self.attempt_claimed(row, trigger=trigger, now=now, owner=owner)

    async def attempt_claimed(
        self, row: Mapping[str, Any], *, trigger: str, owner: Ownership, now: datetime | None = None
    ) -> AttemptOutcome:
        """Attempt a delivery that holds a send slot, read by `delivery_for_attempt` (or claimed with its
        columns), once; record it only if the delivery is still as read (state and attempts)."""
        if row["endpoint_id"] is not None and (not row["endpoint_enabled"] or row["endpoint_deleted_at"]):
            await self._pool.execute(sql("fail_delivery_without_attempt"), row["id"], "the endpoint is disabled")
            return AttemptOutcome(DeliveryState.FAILED, row["attempts"])
        secrets = row["secrets"] if row["endpoint_id"] is not None else [await self._tenant_secret(row["tenant_id"])]
        with attempt_span(row) as span:
            result = await self._sender.send(row["url"], row["message_id"], row["body"], secrets, traceparent=inject())
            outcome = await self._record(row, trigger, result, now or datetime.now(UTC), owner)
            record_attempt_outcome(span, result.status_code, outcome.state, result.error)
        return outcome if outcome.recorded else await self._current(row["id"])

    async def _record(
        self, row: Mapping[str, Any], trigger: str, result: AttemptResult, now: datetime, owner: Ownership
    ) -> AttemptOutcome:
        attempt = row["attempts"] + 1
        if result.succeeded:
            assert result.status_code is not None
            success = Success(
                delivery_id=row["id"],
                endpoint_id=row["endpoint_id"],
                attempt=attempt,
                trigger=trigger,
                attempted_at=now,
                status_code=result.status_code,
                latency_ms=result.latency_ms,
                response_body=result.response_body,
                url=row["url"],
                owned_states=owner.states,
            )
            recorded = await self._successes.record(success)
            return AttemptOutcome(DeliveryState.SUCCEEDED, attempt, recorded=recorded)
        final = row["single_attempt"] or attempt >= self._max_attempts
        endpoint_dead = await self._update_endpoint_health(row["endpoint_id"], result, now)
        state = DeliveryState.FAILED if (final or endpoint_dead) else owner.retry_state
        recorded = await self._pool.fetchval(
            sql("record_attempt"),
            row["id"],
            attempt,
            trigger,
            state,
            result.status_code,
            result.latency_ms,
            result.response_body,
            result.error,
            now,
            row["url"],
            list(owner.states),
            result.retry_after,
            owner.hold_seconds,
        )
        return AttemptOutcome(state, attempt, result.retry_after, recorded=recorded is not None)

    async def _current(self, delivery_id: uuid.UUID) -> AttemptOutcome:
        """What became of a delivery this attempter no longer owns (a workflow sees "retrying" for any
        state on its schedule, so it keeps its timers)."""
        row = await self._pool.fetchrow(sql("delivery_state"), delivery_id)
        if row is None:
            return AttemptOutcome(DeliveryState.FAILED, 0, recorded=False)
        state = DeliveryState(row["state"])
        if state in ON_RETRY_SCHEDULE:
            state = DeliveryState.RETRYING
        return AttemptOutcome(state, row["attempts"], recorded=False)

    async def _tenant_secret(self, tenant_id: uuid.UUID) -> str:
        """What signs a callback_url's deliveries: its tenant's secret, made on first use."""
        return str(await self._pool.fetchval(sql("tenant_signing_secret"), tenant_id, new_webhook_secret()))

    async def _update_endpoint_health(
        self, endpoint_id: uuid.UUID | None, result: AttemptResult, now: datetime
    ) -> bool:
        """Record a failed attempt in the endpoint's health; True if it is (now) disabled."""
        if endpoint_id is None:
            return False
        if result.gone:
            await self._pool.execute(sql("disable_endpoint"), endpoint_id, "the endpoint answered 410 Gone")
            return True
        failing_since: datetime = await self._pool.fetchval(sql("endpoint_failed"), endpoint_id, now)
        if now - failing_since >= self._disable_after:
            reason = f"failing continuously since {wire_timestamp(failing_since)}"
            await self._pool.execute(sql("disable_endpoint"), endpoint_id, reason)
            return True
        return False
