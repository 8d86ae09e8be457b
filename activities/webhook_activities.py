"""The activity of WebhookRetryWorkflow: one scheduled attempt, performed by callbacks' attempts.

The attempt waits for a send slot of its endpoint under the limits every process shares
(callbacks/limits.py), and is recorded only if the delivery is still on its retry schedule with the
attempt count it read, so a dispatcher's resend and this attempt never both record the same one.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from temporalio import activity

from ackflow.contracts import WebhookAttemptInput, WebhookAttemptOutput
from ackflow.logs import bind_log_context
from callbacks import WebhookAttempts


class WebhookActivities:
    """Activities bound to the worker's webhook attempt machinery."""

    def __init__(self, attempts: WebhookAttempts) -> None:
        self._attempts = attempts

    @activity.defn(name="attempt_webhook")
    async def attempt_webhook(self, attempt: WebhookAttemptInput) -> WebhookAttemptOutput:
        bind_log_context(delivery_id=attempt.delivery_id)  # an activity is a task of its own
        outcome = await self._attempts.attempt(
            uuid.UUID(attempt.delivery_id), trigger="retry", now=datetime.fromisoformat(attempt.now)
        )
        return WebhookAttemptOutput(outcome.state, outcome.attempt, outcome.retry_after)
