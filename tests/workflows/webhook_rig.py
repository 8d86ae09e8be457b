"""WebhookRetryWorkflow on Temporal's time-skipping test server, with its real activity, real Postgres and a
real receiver.

Shared by the workflow's tests and by `record_histories`, so the recorded histories come from the same
workflow, activity and worker wiring the tests exercise.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import httpx
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from ackflow.contracts import WEBHOOK_ATTEMPT_NOW_SIGNAL, DeliveryState, WebhookRetryInput
from ackflow.db.queries import sql
from ackflow.webhook_secrets import new_webhook_secret
from activities.webhook_activities import WebhookActivities
from callbacks import EndpointSlots, WebhookAttempts, WebhookSender
from callbacks.attempts import AttemptOutcome, Ownership
from tests.receiver import Receiver, running_receiver
from workflows import WebhookRetryWorkflow

# The dispatcher's part, played by the rig: the first attempt of a pending delivery, handed straight to the workflow.
FIRST_ATTEMPT = Ownership((DeliveryState.PENDING,), DeliveryState.RETRYING)
HOUR = timedelta(hours=1)
MAX_HOURS = 24 * 60  # two months: far past any schedule, so a workflow that never ends fails the caller


@dataclass
class WebhookRig:
    """One endpoint of one tenant, pointing at a receiver, and a worker running the retry workflow."""

    env: WorkflowEnvironment
    pool: asyncpg.Pool
    attempts: WebhookAttempts
    receiver: Receiver
    endpoint_id: uuid.UUID
    tenant_id: uuid.UUID
    task_queue: str

    async def delivery(self) -> uuid.UUID:
        """A pending delivery to the receiver, as the dispatcher finds one."""
        delivery_id = uuid.uuid4()
        await self.pool.execute(
            "INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, message_id, event_type, url, body, state)"
            " VALUES ($1, $2, $3, $4, 'request.done', $5, '{}', 'pending')",
            delivery_id,
            self.tenant_id,
            self.endpoint_id,
            f"msg_{delivery_id.hex}",
            self.receiver.url(),
        )
        return delivery_id

    async def first_attempt(self, delivery_id: uuid.UUID) -> AttemptOutcome:
        """The dispatcher's first attempt, at the test server's current time."""
        now = await self.env.get_current_time()
        return await self.attempts.attempt(delivery_id, trigger="first", now=now, owner=FIRST_ATTEMPT)

    async def start_retries(
        self,
        delivery_id: uuid.UUID,
        first: AttemptOutcome,
        *,
        schedule_seconds: list[float] | None = None,
        attempt_now: bool = False,
    ) -> WorkflowHandle[WebhookRetryWorkflow, str]:
        """Start the retry workflow after a failed first attempt, as callbacks.retries does (signal-with-start
        for a resend)."""
        return await self.env.client.start_workflow(
            WebhookRetryWorkflow.run,
            WebhookRetryInput(str(delivery_id), first.attempt, first.retry_after, schedule_seconds),
            id=f"webhook-{delivery_id}",
            task_queue=self.task_queue,
            start_signal=WEBHOOK_ATTEMPT_NOW_SIGNAL if attempt_now else None,
        )

    async def run_to_end(self, handle: WorkflowHandle[WebhookRetryWorkflow, str]) -> str:
        """Advance the server's clock an hour at a time until the workflow ends; its result.

        Call it with auto time skipping disabled: left to skip on its own between workflows, the test
        server's clock leaps ahead by years, which is no stream of real events.
        """
        for _ in range(MAX_HOURS):
            if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                break
            await self.env.sleep(HOUR)
        return await handle.result()

    async def fail_first_then_retry(self, delivery_id: uuid.UUID) -> str:
        """The dispatcher's first attempt, then (if it failed) the retry workflow to its end: the state reached."""
        with self.env.auto_time_skipping_disabled():
            first = await self.first_attempt(delivery_id)
            if first.state != DeliveryState.RETRYING:
                return first.state
            return await self.run_to_end(await self.start_retries(delivery_id, first))

    async def attempt_times(self, delivery_id: uuid.UUID) -> list[float]:
        """When each attempt of the delivery was made, in order, as epoch seconds."""
        rows = await self.pool.fetch(
            "SELECT attempted_at FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id", delivery_id
        )
        return [row["attempted_at"].timestamp() for row in rows]


async def timers_started(handle: WorkflowHandle[WebhookRetryWorkflow, str]) -> int:
    """How many waits the workflow has begun so far."""
    history = await handle.fetch_history()
    return sum(1 for event in history.events if event.HasField("timer_started_event_attributes"))


@asynccontextmanager
async def webhook_rig(env: WorkflowEnvironment, pool: asyncpg.Pool, tenant_id: uuid.UUID) -> AsyncIterator[WebhookRig]:
    """A receiver, an endpoint of `tenant_id` pointing at it, and a worker on a task queue no one else uses."""
    async with running_receiver() as receiver, httpx.AsyncHTTPTransport() as http:
        endpoint_id = uuid.uuid4()
        await pool.execute(
            sql("create_endpoint"),
            endpoint_id,
            tenant_id,
            receiver.url(),
            "",
            ["request.*"],
            10,
            None,
            new_webhook_secret(),
        )
        attempts = WebhookAttempts(
            pool,
            WebhookSender(http, allow_private=True),
            EndpointSlots(pool, lease_seconds=60),
            disable_after=timedelta(days=5),
        )
        task_queue = f"webhooks-{uuid.uuid4().hex[:8]}"
        async with Worker(
            env.client,
            task_queue=task_queue,
            workflows=[WebhookRetryWorkflow],
            activities=[WebhookActivities(attempts).attempt_webhook],
            # Production runs it unsandboxed (see workflows/webhook_retry.py); here the sandbox still
            # runs it, so a clock, random or I/O call in the workflow fails its tests.
            unsandboxed_workflow_runner=SandboxedWorkflowRunner(),
        ):
            yield WebhookRig(env, pool, attempts, receiver, endpoint_id, tenant_id, task_queue)
