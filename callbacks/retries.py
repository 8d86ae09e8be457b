"""Handing a failed delivery to its durable retry schedule: one Temporal workflow per delivery."""

from __future__ import annotations

import uuid

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from ackflow.contracts import WEBHOOK_RETRY_SCHEDULE_SECONDS, WEBHOOK_RETRY_WORKFLOW, WebhookRetryInput


class TemporalRetryStarter:
    """Starts WebhookRetryWorkflow for a delivery, at most once at a time per delivery."""

    def __init__(self, client: Client, task_queue: str, schedule_seconds: tuple[float, ...] | None = None) -> None:
        self._client = client
        self._task_queue = task_queue
        custom = schedule_seconds and tuple(schedule_seconds) != WEBHOOK_RETRY_SCHEDULE_SECONDS
        self._schedule = list(schedule_seconds) if custom and schedule_seconds else None  # None: the default

    async def __call__(self, delivery_id: uuid.UUID, attempts_done: int, retry_after: float | None) -> None:
        await self._client.start_workflow(
            WEBHOOK_RETRY_WORKFLOW,
            WebhookRetryInput(str(delivery_id), attempts_done, retry_after, self._schedule),
            id=f"webhook-{delivery_id}",
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,  # a resend may need a new schedule later
        )
