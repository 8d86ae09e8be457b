"""ProcessRequestWorkflow with its real activities, on Temporal's time-skipping test server and real Postgres.

Handlers back off for minutes between retries here: the tests finish in a moment only because the
test server skips the workflow's clock forward while nothing is running.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHistory
from temporalio.exceptions import CancelledError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer

from ackflow.contracts import (
    CANCELLED,
    DONE,
    FAILED,
    INIT,
    PROCESSING,
    FinishInput,
    HandlerOptions,
    RunHandlerInput,
    StartProcessingInput,
)
from ackflow.db.transitions import transition
from ackflow.handlers import HandlerFunction, HandlerRegistry
from activities.request_activities import RequestActivities
from tests.workflows import incompatible_workflow
from tests.workflows.harness import (
    Bench,
    Echo,
    Flaky,
    Heartbeating,
    Refuses,
    handler_attempts,
    workflow_duration_seconds,
)
from workflows import ProcessRequestWorkflow

RESULT_TIMEOUT = 30.0  # real seconds; the workflows below span up to hours of workflow time
HISTORIES = Path(__file__).parent / "histories"
RECORDED_OUTCOMES = {"done", "failed", "cancelled_while_running", "cancelled_before_start"}


async def bench_with(
    env: WorkflowEnvironment, pool: asyncpg.Pool, kind: str, function: HandlerFunction, **options: Any
) -> Bench:
    """A bench whose registry (not the global one) holds only `function` as the handler of `kind`."""
    registry = HandlerRegistry()
    registry.add(kind, function, HandlerOptions(**options))
    return await Bench.create(env.client, pool, registry)


async def run_to_end(
    bench: Bench, request_id: str, kind: str, *, options_known: bool = True
) -> tuple[Any, WorkflowHistory]:
    """Run the request's workflow on a worker until it ends; its result and its history."""
    async with bench.worker():
        handle = await bench.start(request_id, kind, options_known=options_known)
        outcome = await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
        return outcome, await handle.fetch_history()


# --- Retries and failures -----------------------------------------------------------------------


async def test_transient_failures_are_retried_after_skipped_backoff_then_done_with_result_recorded_once(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    flaky = Flaky(failures=2)
    bench = await bench_with(
        workflow_env, pool, "flaky", flaky, max_attempts=5, initial_retry_seconds=600, max_retry_seconds=3600
    )
    request_id = await bench.accept("flaky", {"n": 1})

    outcome, history = await run_to_end(bench, request_id, "flaky")

    assert outcome == DONE
    assert flaky.calls == 3
    assert flaky.payloads == [{"n": 1}] * 3, (
        "the first attempt reads the payload as it moves to PROCESSING, retries reread it"
    )
    assert handler_attempts(history) == [3], "one scheduled run_handler, which succeeded on its third attempt"
    assert workflow_duration_seconds(history) >= 600 + 1200, "both back-offs passed in workflow time"
    row = await bench.request(request_id)
    assert (row["status"], row["version"], row["result"], row["error"]) == (DONE, 3, {"attempts": 3}, None)
    assert row["completed_at"] is not None
    assert await bench.topics(request_id) == ["request.accepted", "request.processing", "request.done"]


async def test_permanent_error_ends_failed_with_its_message_after_one_attempt(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    refuses = Refuses("the printer is on fire")
    bench = await bench_with(
        workflow_env, pool, "refuses", refuses, max_attempts=5, initial_retry_seconds=600, max_retry_seconds=3600
    )
    request_id = await bench.accept("refuses")

    outcome, history = await run_to_end(bench, request_id, "refuses")

    assert outcome == FAILED
    assert refuses.calls == 1
    assert handler_attempts(history) == [1]
    row = await bench.request(request_id)
    assert (row["status"], row["version"], row["result"]) == (FAILED, 3, None)
    assert row["error"] == {"type": "PermanentError", "message": "the printer is on fire"}
    assert await bench.topics(request_id) == ["request.accepted", "request.processing", "request.failed"]


async def test_handler_failing_every_attempt_ends_failed_with_the_last_error_after_max_attempts(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    always_fails = Flaky(failures=None)
    bench = await bench_with(
        workflow_env, pool, "doomed", always_fails, max_attempts=3, initial_retry_seconds=600, max_retry_seconds=3600
    )
    request_id = await bench.accept("doomed")

    outcome, history = await run_to_end(bench, request_id, "doomed")

    assert outcome == FAILED
    assert always_fails.calls == 3
    assert handler_attempts(history) == [3]
    assert workflow_duration_seconds(history) >= 600 + 1200
    row = await bench.request(request_id)
    assert (row["status"], row["version"], row["result"]) == (FAILED, 3, None)
    assert row["error"]["type"] == "RuntimeError"
    assert row["error"]["message"] == "transient failure 3"


# --- Cancellation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options_known", "expected_outcome", "expected_attempts"),
    [(True, CANCELLED, [1]), (False, "already finished", [])],
    ids=["options-in-input", "options-from-worker"],
)
async def test_request_cancelled_before_its_workflow_started_never_runs_its_handler_and_stays_cancelled(
    workflow_env: WorkflowEnvironment,
    pool: asyncpg.Pool,
    options_known: bool,
    expected_outcome: str,
    expected_attempts: list[int],
) -> None:
    echo = Echo()
    bench = await bench_with(workflow_env, pool, "echo", echo)
    request_id = await bench.accept("echo", {"x": 1})
    assert await transition(pool, request_id, CANCELLED, (INIT,))

    outcome, history = await run_to_end(bench, request_id, "echo", options_known=options_known)

    assert outcome == expected_outcome
    assert echo.calls == 0
    assert handler_attempts(history) == expected_attempts
    row = await bench.request(request_id)
    assert (row["status"], row["version"], row["result"]) == (CANCELLED, 2, None)
    assert await bench.topics(request_id) == ["request.accepted", "request.cancelled"]


@pytest.mark.parametrize(
    ("options_known", "local_activities"), [(True, 0), (False, 1)], ids=["options-in-input", "options-from-worker"]
)
async def test_a_kinds_registered_options_schedule_its_handler_with_one_local_activity_only_when_not_in_the_input(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool, options_known: bool, local_activities: int
) -> None:
    echo = Echo()
    bench = await bench_with(workflow_env, pool, "echo", echo, start_to_close_seconds=42)
    request_id = await bench.accept("echo", {"x": 1})

    outcome, history = await run_to_end(bench, request_id, "echo", options_known=options_known)

    assert outcome == DONE
    assert echo.calls == 1
    assert scheduled_timeouts(history) == [42.0]
    markers = [e for e in history.events if e.HasField("marker_recorded_event_attributes")]
    assert len(markers) == local_activities  # each local activity leaves one marker
    row = await bench.request(request_id)
    assert (row["status"], row["version"], row["result"]) == (DONE, 3, {"x": 1})
    assert await bench.topics(request_id) == ["request.accepted", "request.processing", "request.done"]


def scheduled_timeouts(history: WorkflowHistory) -> list[float]:
    """The start-to-close timeout, in seconds, of every scheduled run_handler activity."""
    return [
        event.activity_task_scheduled_event_attributes.start_to_close_timeout.ToTimedelta().total_seconds()
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
    ]


async def test_cancelling_the_workflow_while_its_handler_heartbeats_records_cancelled_and_no_result(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    sleeper = Heartbeating(seconds=30)
    bench = await bench_with(workflow_env, pool, "sleeper", sleeper, start_to_close_seconds=3600, heartbeat_seconds=2)
    request_id = await bench.accept("sleeper")

    async with bench.worker():
        handle = await bench.start(request_id, "sleeper")
        await asyncio.wait_for(sleeper.started.wait(), RESULT_TIMEOUT)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
        # The next heartbeat carries the cancel into the handler (before the worker stops, which would too).
        await asyncio.wait_for(sleeper.cancelled.wait(), RESULT_TIMEOUT)
        description = await handle.describe()

    assert isinstance(failure.value.cause, CancelledError)
    assert description.status == WorkflowExecutionStatus.CANCELED
    row = await bench.request(request_id)
    assert (row["status"], row["version"], row["result"], row["error"]) == (CANCELLED, 3, None, None)
    assert await bench.topics(request_id) == ["request.accepted", "request.processing", "request.cancelled"]


async def test_handler_finishing_after_its_request_was_cancelled_has_its_result_dropped(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def ignores_cancel(payload: Any) -> dict[str, bool]:
        started.set()
        await release.wait()
        return {"late": True}

    bench = await bench_with(workflow_env, pool, "stubborn", ignores_cancel)
    request_id = await bench.accept("stubborn")
    assert await transition(pool, request_id, PROCESSING, (INIT,))
    activities = RequestActivities(pool, bench.registry)
    attempt = asyncio.create_task(
        ActivityEnvironment().run(activities.run_handler, RunHandlerInput(request_id, "stubborn"))
    )
    await asyncio.wait_for(started.wait(), RESULT_TIMEOUT)

    await ActivityEnvironment().run(activities.finish_request, FinishInput(request_id, CANCELLED))
    release.set()
    await asyncio.wait_for(attempt, RESULT_TIMEOUT)

    row = await bench.request(request_id)
    assert (row["status"], row["version"], row["result"]) == (CANCELLED, 3, None)


# --- Status only moves forward ------------------------------------------------------------------


async def test_done_request_stays_done_with_same_version_when_done_is_replayed_or_failed_is_recorded_late(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    echo = Echo()
    bench = await bench_with(workflow_env, pool, "echo", echo)
    request_id = await bench.accept("echo", {"x": 1})
    outcome, _ = await run_to_end(bench, request_id, "echo")
    assert outcome == DONE
    done = await bench.request(request_id)
    activities = RequestActivities(pool, bench.registry)
    activity = ActivityEnvironment()

    assert not await transition(pool, request_id, DONE, (PROCESSING,), result={"x": 2})
    await activity.run(activities.run_handler, RunHandlerInput(request_id, "echo"))  # a late retry of the handler
    await activity.run(activities.finish_request, FinishInput(request_id, FAILED, error={"message": "too late"}))
    await activity.run(activities.finish_request, FinishInput(request_id, CANCELLED))
    restarted = await activity.run(activities.start_processing, StartProcessingInput(request_id, "echo"))

    assert not restarted.proceed
    assert echo.calls == 1
    assert dict(await bench.request(request_id)) == dict(done)
    assert (done["status"], done["version"], done["result"], done["error"]) == (DONE, 3, {"x": 1}, None)
    assert await bench.topics(request_id) == ["request.accepted", "request.processing", "request.done"]


# --- Replay of recorded histories ---------------------------------------------------------------


def recorded_histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


def load_history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text(encoding="utf-8"))


def test_recorded_histories_cover_done_failed_and_both_cancelled_paths() -> None:
    # Runs with handler options in their input, and runs from before (options from a worker).
    expected = RECORDED_OUTCOMES | {f"options_from_worker_{outcome}" for outcome in RECORDED_OUTCOMES}
    assert {path.stem for path in recorded_histories()} >= expected, (
        "record them with: .venv/bin/python -m tests.workflows.record_histories"
    )


@pytest.mark.parametrize("path", recorded_histories(), ids=lambda path: path.stem)
async def test_recorded_history_replays_on_the_current_workflow_without_nondeterminism(path: Path) -> None:
    replayer = Replayer(workflows=[ProcessRequestWorkflow])

    result = await replayer.replay_workflow(load_history(path), raise_on_replay_failure=False)

    assert result.replay_failure is None, f"{path.name}: {result.replay_failure!r}"


async def test_replay_fails_when_the_workflow_no_longer_matches_a_recorded_history() -> None:
    replayer = Replayer(workflows=[incompatible_workflow.ProcessRequestWorkflow])

    history = load_history(HISTORIES / "options_from_worker_done.json")

    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)

    assert result.replay_failure is not None
