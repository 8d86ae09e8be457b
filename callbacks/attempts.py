"""One attempt of one delivery, performed and recorded: shared by the dispatcher (first attempts,
resends, tests) and by the retry workflow's activity (attempts 2 to 8).

An attempt also keeps the endpoint's health: a success clears `failing_since`; a failure sets it
if unset; `410 Gone`, or failing continuously for longer than `disable_after` (5 days by default),
disables the endpoint and records a `webhook.endpoint_disabled` event. Times come from the caller
(`now`), so the retry workflow can run on Temporal's clock (and its time-skipping tests).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from ackflow.contracts import WEBHOOK_RETRY_SCHEDULE_SECONDS
from ackflow.db.queries import sql
from ackflow.webhook_secrets import new_webhook_secret
from callbacks.limits import EndpointLimiter
from callbacks.sender import AttemptResult, WebhookSender

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

    async def attempt(
        self, delivery_id: uuid.UUID, *, trigger: str, now: datetime | None = None, retry_state: str = RETRYING
    ) -> AttemptOutcome:
        """Attempt the delivery once. A failure that may be retried leaves it in `retry_state`."""
        row = await self._pool.fetchrow(sql("delivery_for_attempt"), delivery_id)
        if row is None:
            return AttemptOutcome(FAILED, 0)
        if trigger == "retry" and row["state"] in (SUCCEEDED, FAILED):
            return AttemptOutcome(row["state"], row["attempts"])  # a resend finished it meanwhile
        if row["endpoint_id"] is not None and (not row["endpoint_enabled"] or row["endpoint_deleted_at"]):
            await self._pool.execute(sql("fail_delivery_without_attempt"), delivery_id, "the endpoint is disabled")
            return AttemptOutcome(FAILED, row["attempts"])
        secrets = await self._secrets(row["endpoint_id"], row["tenant_id"])
        async with self._limiter.slot(row["endpoint_id"]):
            result = await self._sender.send(row["url"], row["message_id"], row["body"], secrets)
        moment = now or datetime.now(UTC)
        attempt = row["attempts"] + 1
        final = row["single_attempt"] or attempt >= self._max_attempts
        endpoint_dead = await self._update_endpoint_health(row["endpoint_id"], result, moment)
        state = SUCCEEDED if result.succeeded else FAILED if (final or endpoint_dead) else retry_state
        await self._pool.execute(
            sql("record_attempt"),
            delivery_id,
            attempt,
            trigger,
            state,
            result.status_code,
            result.latency_ms,
            result.response_body,
            result.error,
            moment,
            row["url"],
        )
        return AttemptOutcome(state, attempt, result.retry_after)

    async def _secrets(self, endpoint_id: uuid.UUID | None, tenant_id: uuid.UUID) -> list[str]:
        if endpoint_id is not None:
            return [r["secret"] for r in await self._pool.fetch(sql("endpoint_signing_secrets"), endpoint_id)]
        return [await self._pool.fetchval(sql("tenant_signing_secret"), tenant_id, new_webhook_secret())]

    async def _update_endpoint_health(
        self, endpoint_id: uuid.UUID | None, result: AttemptResult, now: datetime
    ) -> bool:
        """Record the endpoint's health; True if it is (now) disabled."""
        if endpoint_id is None:
            return False
        if result.succeeded:
            await self._pool.execute(sql("endpoint_succeeded"), endpoint_id)
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
