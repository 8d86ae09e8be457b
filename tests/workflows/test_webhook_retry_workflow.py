"""WebhookRetryWorkflow on Temporal's time-skipping server: the whole ~27.6 h schedule and the
five-day disable, proven in seconds against real Postgres and a real (failing) receiver."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from ackflow.contracts import WEBHOOK_RETRY_JITTER, WEBHOOK_RETRY_SCHEDULE_SECONDS
from tests.conftest import Tenant
from tests.receiver import Reply
from tests.workflows import incompatible_workflow
from tests.workflows.record_histories import WEBHOOK_HISTORIES, WEBHOOK_SCENARIOS
from tests.workflows.webhook_rig import WebhookRig, webhook_rig
from workflows import WebhookRetryWorkflow
from workflows.webhook_retry import retry_delay

# Recorded before resends signalled the workflow (an older shape of it); kept to prove such runs still replay.
RECORDED_BEFORE_RESENDS = {"eight_failed_attempts", "retry_after_then_success"}


@pytest.fixture
async def rig(workflow_env: WorkflowEnvironment, pool: asyncpg.Pool, tenant: Tenant) -> AsyncIterator[WebhookRig]:
    async with webhook_rig(workflow_env, pool, tenant.id) as rig:
        yield rig


async def test_a_receiver_that_always_fails_gets_eight_attempts_on_svix_schedule(rig: WebhookRig) -> None:
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


async def test_retry_after_on_429_replaces_the_scheduled_wait(rig: WebhookRig) -> None:
    rig.receiver.reply_with(Reply(429, {"retry-after": "7200"}), 200)
    delivery_id = await rig.delivery()

    assert await rig.fail_first_then_retry(delivery_id) == "succeeded"

    first, second = await rig.attempt_times(delivery_id)
    assert 7200 - 1 <= second - first <= 7200 + 5, "waited what the receiver asked, not 5 s"


async def test_an_endpoint_failing_for_five_days_is_disabled_with_an_event(rig: WebhookRig) -> None:
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


# --- Replay of recorded histories (record them with: python -m tests.workflows.record_histories) --------


def recorded_histories() -> list[Path]:
    return sorted(WEBHOOK_HISTORIES.glob("*.json"))


def load_history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text(encoding="utf-8"))


def test_recorded_histories_cover_every_path_of_the_workflow() -> None:
    assert {path.stem for path in recorded_histories()} >= set(WEBHOOK_SCENARIOS) | RECORDED_BEFORE_RESENDS, (
        "record them with: .venv/bin/python -m tests.workflows.record_histories"
    )


def test_the_recorded_full_schedule_has_seven_waits_on_svix_schedule_and_seven_attempts() -> None:
    events = load_history(WEBHOOK_HISTORIES / "schedule_ran_out.json").events
    timers = [e.timer_started_event_attributes for e in events if e.HasField("timer_started_event_attributes")]
    attempts = [e for e in events if e.HasField("activity_task_scheduled_event_attributes")]
    assert len(timers) == len(attempts) == len(WEBHOOK_RETRY_SCHEDULE_SECONDS) == 7
    for timer, planned in zip(timers, WEBHOOK_RETRY_SCHEDULE_SECONDS, strict=True):
        waited = timer.start_to_fire_timeout.ToTimedelta().total_seconds()
        assert planned * (1 - WEBHOOK_RETRY_JITTER) <= waited <= planned * (1 + WEBHOOK_RETRY_JITTER), (waited, planned)


@pytest.mark.parametrize("path", recorded_histories(), ids=lambda path: path.stem)
async def test_recorded_history_replays_on_the_current_workflow_without_nondeterminism(path: Path) -> None:
    replayer = Replayer(workflows=[WebhookRetryWorkflow])

    result = await replayer.replay_workflow(load_history(path), raise_on_replay_failure=False)

    assert result.replay_failure is None, f"{path.name}: {result.replay_failure!r}"


@pytest.mark.parametrize("name", ["schedule_ran_out", "succeeded_after_failures", "eight_failed_attempts"])
async def test_replay_fails_as_nondeterministic_when_the_retry_workflow_no_longer_waits_before_an_attempt(
    name: str,
) -> None:
    replayer = Replayer(workflows=[incompatible_workflow.WebhookRetryWorkflow])

    result = await replayer.replay_workflow(
        load_history(WEBHOOK_HISTORIES / f"{name}.json"), raise_on_replay_failure=False
    )

    assert isinstance(result.replay_failure, NondeterminismError), repr(result.replay_failure)
