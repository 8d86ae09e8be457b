"""One attempt of one delivery, performed and recorded: shared by the dispatcher (first attempts,
resends, tests) and by the retry workflow's activity (attempts 2 to 8).

An attempt also keeps the endpoint's health: a success clears `failing_since` (successes are
recorded many to a statement: callbacks/successes.py); a failure sets it
if unset; `410 Gone`, or failing continuously for longer than `disable_after` (5 days by default),
disables the endpoint and records a `webhook.endpoint_disabled` event. Times come from the caller
(`now`), so the retry workflow can run on Temporal's clock (and its time-skipping tests).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from ackflow.contracts import WEBHOOK_RETRY_SCHEDULE_SECONDS
from ackflow.db.queries import sql
from ackflow.webhook_secrets import new_webhook_secret
from callbacks.limits import EndpointLimiter
from callbacks.sender import AttemptResult, WebhookSender
from callbacks.successes import Success, SuccessRecorder

SUCCEEDED, RETRYING, FAILED = "succeeded", "retrying", "failed"


@dataclass(frozen=True)
class AttemptOutcome:
    """The delivery's state after the attempt, and the receiver's Retry-After if it gave one."""

    state: str
    attempt: int
    retry_after: float | None = None


class WebhookAttempts:
    """Performs delivery attempts: sign with the current secrets, send within limits, record."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        sender: WebhookSender,
        limiter: EndpointLimiter,
        *,
        disable_after: timedelta,
        max_attempts: int = len(WEBHOOK_RETRY_SCHEDULE_SECONDS) + 1,
    ) -> None:
        self._pool = pool
        self._max_attempts = max_attempts
        self._sender = sender
        self._limiter = limiter
        self._disable_after = disable_after
        self._successes = SuccessRecorder(pool)

    async def attempt(
        self, delivery_id: uuid.UUID, *, trigger: str, now: datetime | None = None, retry_state: str = RETRYING
    ) -> AttemptOutcome:
        """Attempt the delivery once. A failure that may be retried leaves it in `retry_state`."""
        row = await self._pool.fetchrow(sql("delivery_for_attempt"), delivery_id)
        if row is None:
            return AttemptOutcome(FAILED, 0)
        if trigger == "retry" and row["state"] in (SUCCEEDED, FAILED):
            return AttemptOutcome(row["state"], row["attempts"])  # a resend finished it meanwhile
        return await self.attempt_claimed(row, trigger=trigger, now=now, retry_state=retry_state)

    async def attempt_claimed(
        self, row: Mapping[str, Any], *, trigger: str, now: datetime | None = None, retry_state: str = RETRYING
    ) -> AttemptOutcome:
        """Attempt a delivery read by `delivery_for_attempt` (or claimed with its columns) once."""
        if row["endpoint_id"] is not None and (not row["endpoint_enabled"] or row["endpoint_deleted_at"]):
            await self._pool.execute(sql("fail_delivery_without_attempt"), row["id"], "the endpoint is disabled")
            return AttemptOutcome(FAILED, row["attempts"])
        secrets = row["secrets"] if row["endpoint_id"] is not None else [await self._tenant_secret(row["tenant_id"])]
        async with self._limiter.slot(row["endpoint_id"]):
            result = await self._sender.send(row["url"], row["message_id"], row["body"], secrets)
        return await self._record(row, trigger, result, now or datetime.now(UTC), retry_state)

    async def _record(
        self, row: Mapping[str, Any], trigger: str, result: AttemptResult, now: datetime, retry_state: str
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
            )
            await self._successes.record(success)
            return AttemptOutcome(SUCCEEDED, attempt)
        final = row["single_attempt"] or attempt >= self._max_attempts
        endpoint_dead = await self._update_endpoint_health(row["endpoint_id"], result, now)
        state = FAILED if (final or endpoint_dead) else retry_state
        await self._pool.execute(
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
        )
        return AttemptOutcome(state, attempt, result.retry_after)

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
            reason = f"failing continuously since {failing_since.isoformat()}"
            await self._pool.execute(sql("disable_endpoint"), endpoint_id, reason)
            return True
        return False
