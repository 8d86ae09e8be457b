"""WebhookRetryWorkflow on Temporal's time-skipping server: the whole ~27.6 h schedule and the
five-day disable, proven in seconds against real Postgres and a real (failing) receiver."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from ackflow.contracts import WEBHOOK_RETRY_JITTER, WEBHOOK_RETRY_SCHEDULE_SECONDS, WebhookRetryInput
from ackflow.db.queries import sql
from ackflow.webhook_secrets import new_webhook_secret
from activities.webhook_activities import WebhookActivities
from callbacks import EndpointLimiter, WebhookAttempts, WebhookSender
from tests.conftest import Tenant
from tests.receiver import Receiver, Reply, running_receiver
from workflows import WebhookRetryWorkflow
from workflows.webhook_retry import retry_delay


@dataclass
class Rig:
    env: WorkflowEnvironment
    pool: asyncpg.Pool
    attempts: WebhookAttempts
    receiver: Receiver
    endpoint_id: uuid.UUID
    tenant: Tenant
    task_queue: str
    histories: list[WorkflowHistory] = field(default_factory=list)  # of every retry workflow run to its end

    async def delivery(self) -> uuid.UUID:
        delivery_id = uuid.uuid4()
        await self.pool.execute(
            "INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, message_id, event_type, url, body, state)"
            " VALUES ($1, $2, $3, $4, 'request.done', $5, '{}', 'pending')",
            delivery_id,
            self.tenant.id,
            self.endpoint_id,
            f"msg_{delivery_id.hex}",
            self.receiver.url(),
        )
        return delivery_id

    async def fail_first_then_retry(self, delivery_id: uuid.UUID) -> str:
        """The dispatcher's first attempt at the server's current time, then the retry workflow to its end.

        Time advances only by explicit hour-long steps: left to skip on its own between workflows,
        the test server's clock leaps ahead by years, which is no stream of real events.
        """
        with self.env.auto_time_skipping_disabled():
            now = await self.env.get_current_time()
            first = await self.attempts.attempt(delivery_id, trigger="first", now=now, retry_state="retrying")
            if first.state != "retrying":
                return first.state
            handle = await self.env.client.start_workflow(
                WebhookRetryWorkflow.run,
                WebhookRetryInput(str(delivery_id), first.attempt, first.retry_after),
                id=f"webhook-{delivery_id}",
                task_queue=self.task_queue,
            )
            for _ in range(24 * 60):  # at most two months of hours
                description = await handle.describe()
                if description.status != WorkflowExecutionStatus.RUNNING:
                    break
                await self.env.sleep(timedelta(hours=1))
            outcome = str(await handle.result())
            self.histories.append(await handle.fetch_history())
            return outcome

    async def attempt_times(self, delivery_id: uuid.UUID) -> list[float]:
        rows = await self.pool.fetch(
            "SELECT attempted_at FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id", delivery_id
        )
        return [row["attempted_at"].timestamp() for row in rows]


@pytest.fixture
async def rig(workflow_env: WorkflowEnvironment, pool: asyncpg.Pool, tenant: Tenant) -> AsyncIterator[Rig]:
    async with running_receiver() as receiver, httpx.AsyncHTTPTransport() as http:
        endpoint_id = uuid.uuid4()
        await pool.execute(
            sql("create_endpoint"),
            endpoint_id,
            tenant.id,
            receiver.url(),
            "",
            ["request.*"],
            10,
            None,
            new_webhook_secret(),
        )
        attempts = WebhookAttempts(
            pool, WebhookSender(http, allow_private=True), EndpointLimiter(pool), disable_after=timedelta(days=5)
        )
        task_queue = f"webhooks-{uuid.uuid4().hex[:8]}"
        async with Worker(
            workflow_env.client,
            task_queue=task_queue,
            workflows=[WebhookRetryWorkflow],
            activities=[WebhookActivities(attempts).attempt_webhook],
            # Production runs it unsandboxed (see workflows/webhook_retry.py); here the sandbox still
            # runs it, so a clock, random or I/O call in the workflow fails these tests.
            unsandboxed_workflow_runner=SandboxedWorkflowRunner(),
        ):
            yield Rig(workflow_env, pool, attempts, receiver, endpoint_id, tenant, task_queue)


async def test_a_receiver_that_always_fails_gets_eight_attempts_on_svix_schedule(rig: Rig) -> None:
    rig.receiver.reply_with(*[500] * 20)
    delivery_id = await rig.delivery()

    assert await rig.fail_first_then_retry(delivery_id) == "failed"

    times = await rig.attempt_times(delivery_id)
    assert len(times) == 8 == len(rig.receiver.received)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    for gap, planned in zip(gaps, WEBHOOK_RETRY_SCHEDULE_SECONDS, strict=True):
        assert planned * (1 - WEBHOOK_RETRY_JITTER) - 1 <= gap <= planned * (1 + WEBHOOK_RETRY_JITTER) + 5, (
            gap,
            planned,
        )
    total = sum(WEBHOOK_RETRY_SCHEDULE_SECONDS)  # about 27.6 hours
    assert total * (1 - WEBHOOK_RETRY_JITTER) - 10 <= times[-1] - times[0] <= total * (1 + WEBHOOK_RETRY_JITTER) + 60
    assert len({r.webhook_id for r in rig.receiver.received}) == 1
    state = await rig.pool.fetchval("SELECT state FROM webhook_deliveries WHERE id = $1", delivery_id)
    assert state == "failed"
    # Replaying the whole history (seven timers, seven attempts) must give the same commands.
    [history] = rig.histories
    await Replayer(workflows=[WebhookRetryWorkflow]).replay_workflow(history)


async def test_retry_after_on_429_replaces_the_scheduled_wait(rig: Rig) -> None:
    rig.receiver.reply_with(Reply(429, {"retry-after": "7200"}), 200)
    delivery_id = await rig.delivery()

    assert await rig.fail_first_then_retry(delivery_id) == "succeeded"

    first, second = await rig.attempt_times(delivery_id)
    assert 7200 - 1 <= second - first <= 7200 + 5, "waited what the receiver asked, not 5 s"


async def test_an_endpoint_failing_for_five_days_is_disabled_with_an_event(rig: Rig) -> None:
    rig.receiver.reply_with(*[503] * 100)
    outcomes = []
    for _ in range(6):
        outcomes.append(await rig.fail_first_then_retry(await rig.delivery()))
        if not await rig.pool.fetchval("SELECT enabled FROM webhook_endpoints WHERE id = $1", rig.endpoint_id):
            break

    endpoint = await rig.pool.fetchrow("SELECT * FROM webhook_endpoints WHERE id = $1", rig.endpoint_id)
    assert endpoint["enabled"] is False and "failing continuously" in endpoint["disabled_reason"]
    assert 3 <= len(outcomes) <= 5 and set(outcomes) == {"failed"}
    last_attempt = await rig.pool.fetchval(
        "SELECT max(a.attempted_at) FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id"
        " WHERE d.endpoint_id = $1",
        rig.endpoint_id,
    )
    assert last_attempt - endpoint["failing_since"] >= timedelta(days=5)
    events = await rig.pool.fetch("SELECT type FROM webhook_endpoint_events WHERE endpoint_id = $1", rig.endpoint_id)
    assert [e["type"] for e in events] == ["webhook.endpoint_disabled"]
    attempts_before = len(rig.receiver.received)
    assert await rig.fail_first_then_retry(await rig.delivery()) == "failed"
    assert len(rig.receiver.received) == attempts_before, "a disabled endpoint is not called"


def test_retry_delay_follows_the_schedule_with_bounded_jitter_and_retry_after() -> None:
    schedule = WEBHOOK_RETRY_SCHEDULE_SECONDS
    assert retry_delay(schedule, 1, None, 0.0) == 5
    assert retry_delay(schedule, 2, None, 1.0) == pytest.approx(300 * 1.2)
    assert retry_delay(schedule, 7, None, -1.0) == pytest.approx(36000 * 0.8)
    assert retry_delay(schedule, 1, 0.01, 0.0) == 1, "Retry-After below a second is raised to one"
    assert retry_delay(schedule, 1, 10**9, 0.0) == 24 * 3600, "Retry-After is capped at a day"
    assert sum(schedule) == 5 + 300 + 1800 + 7200 + 18000 + 36000 + 36000  # 27.6 h from first to last attempt
