"""Handing a failed delivery to its durable retry schedule: one Temporal workflow per delivery."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from ackflow.contracts import (
    WEBHOOK_ATTEMPT_NOW_SIGNAL,
    WEBHOOK_RETRY_SCHEDULE_SECONDS,
    WEBHOOK_RETRY_WORKFLOW,
    WebhookRetryInput,
)

START_TIMEOUT = timedelta(seconds=10)


class TemporalRetryStarter:
    """Starts WebhookRetryWorkflow for a delivery, at most once at a time per delivery."""

    def __init__(self, client: Client, task_queue: str, schedule_seconds: tuple[float, ...] | None = None) -> None:
        self._client = client
        self._task_queue = task_queue
        custom = schedule_seconds and tuple(schedule_seconds) != WEBHOOK_RETRY_SCHEDULE_SECONDS
        self._schedule = list(schedule_seconds) if custom and schedule_seconds else None  # None: the default

    async def __call__(
        self, delivery_id: uuid.UUID, attempts_done: int, retry_after: float | None, *, attempt_now: bool = False
    ) -> None:
        """Start the delivery's retry workflow (an existing run is kept). `attempt_now` (a resend) also
        signals it to attempt at once: signal-with-start, so a run that is not there is started too."""
        await self._client.start_workflow(
            WEBHOOK_RETRY_WORKFLOW,
            WebhookRetryInput(str(delivery_id), attempts_done, retry_after, self._schedule),
            id=f"webhook-{delivery_id}",
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,  # a resend may need a new schedule later
            start_signal=WEBHOOK_ATTEMPT_NOW_SIGNAL if attempt_now else None,
            rpc_timeout=START_TIMEOUT,  # an unreachable Temporal fails the hand-off, which is then postponed
        )
