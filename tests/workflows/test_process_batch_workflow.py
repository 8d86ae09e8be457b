"""ProcessBatchWorkflow with its real activities, on Temporal's time-skipping test server and real Postgres.

Each request of a batch keeps its own outcome, events, retries, timeout and cancellation; these tests
prove it from the requests' rows in Postgres, from the handlers' calls and from the workflow's history.
run_batch is a local activity (one per kind of the batch): in history only a marker, with its type,
attempt and result (the requests it handed back to be retried) but not its input; run_handler, a
retry alone or a heartbeating kind, is a regular activity whose scheduled input names its request.
Back-offs of minutes pass in a moment: the test server skips the workflow's clock.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHistory
from temporalio.exceptions import CancelledError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from ackflow.contracts import (
    CANCEL_REQUEST_SIGNAL,
    CANCELLED,
    DONE,
    FAILED,
    INIT,
    PROCESSING,
    HandlerOptions,
    RunBatchInput,
    RunBatchOutput,
)
from ackflow.db.transitions import transition
from ackflow.handlers import HandlerFunction, HandlerRegistry
from activities.request_activities import RequestActivities
from tests.helpers import assert_eventually
from tests.workflows import incompatible_workflow
from tests.workflows.harness import (
    Bench,
    Echo,
    Flaky,
    Gate,
    Heartbeating,
    Refuses,
    batch_retries,
    handler_attempts,
    local_activities,
    scheduled_activities,
    scheduled_requests,
    workflow_duration_seconds,
)
from workflows import ProcessBatchWorkflow, ProcessRequestWorkflow

RESULT_TIMEOUT = 30.0  # real seconds; the workflows below span up to hours of workflow time
BATCH_HISTORIES = Path(__file__).parent / "histories" / "batch"
RECORDED_BATCH_PATHS = {
    "batch_done",
    "batch_mixed",
    "batch_cancelled_by_signal",
    "batch_workflow_cancelled",
    "batch_handed_over",
    "batch_pipeline_approved",  # the batch side of a workflow kind's runs (test_workflow_kind_replay.py)
    "batch_pipeline_rejected",
    "batch_pipeline_cancelled_while_waiting",
}
DONE_TOPICS = ["request.accepted", "request.processing", "request.done"]
SLOW_RETRIES: dict[str, Any] = {"max_attempts": 5, "initial_retry_seconds": 600, "max_retry_seconds": 3600}
# run_batch looks each second for requests of it that ended (activities.request_activities.BATCH_WATCH_SECONDS).
CANCEL_NOTICED_SECONDS = 5.0
# While a local activity runs, the workflow's commands wait for it; run_batch returns within
# LOCAL_BUDGET_SECONDS (4 s), handing slow handlers over to await_requests, so a retry alone beside a
# slow kind, or the end of a cancelled workflow, waits that long at most (and never the 8 s
# workflow-task heartbeats it would take if run_batch waited for its slow handlers).
HELD_WORKFLOW_TASK_SECONDS = 12.0


async def bench_of(
    env: WorkflowEnvironment, pool: asyncpg.Pool, kinds: dict[str, tuple[HandlerFunction, dict[str, Any]]]
) -> Bench:
    """A bench whose registry holds exactly these kinds: name -> (handler, its HandlerOptions fields)."""
    registry = HandlerRegistry()
    for kind, (function, options) in kinds.items():
        registry.add(kind, function, HandlerOptions(**options))
    return await Bench.create(env.client, pool, registry)


async def run_batch_to_end(bench: Bench, request_ids: list[str]) -> tuple[Any, WorkflowHistory]:
    """Run one batch of these requests on a worker until its workflow ends; its result and its history."""
    async with bench.worker():
        handle = await bench.start_batch(request_ids)
        outcome = await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
        return outcome, await handle.fetch_history()


@asynccontextmanager
async def released_on_exit(*gates: Gate) -> AsyncIterator[None]:
    """Open the gates when the block ends, pass or fail: a worker's shutdown waits for its local
    activities, so a failed assertion would otherwise hang on a handler still waiting at its gate."""
    try:
        yield
    finally:
        for gate in gates:
            gate.release.set()


async def status_of(bench: Bench, request_id: str) -> str:
    return str((await bench.request(request_id))["status"])


async def assert_done_once(bench: Bench, request_id: str, result: Any) -> None:
    """DONE with `result`, through exactly one PROCESSING: version 3, one event per status."""
    row = await bench.request(request_id)
    assert (row["status"], row["version"], row["result"], row["error"]) == (DONE, 3, result, None)
    assert row["completed_at"] is not None
    assert await bench.topics(request_id) == DONE_TOPICS


async def assert_failed(bench: Bench, request_id: str, error: dict[str, str]) -> None:
    row = await bench.request(request_id)
    assert (row["status"], row["version"], row["result"], row["error"]) == (FAILED, 3, None, error)
    assert await bench.topics(request_id) == ["request.accepted", "request.processing", "request.failed"]


async def assert_cancelled_while_processing(bench: Bench, request_id: str) -> None:
    row = await bench.request(request_id)
    assert (row["status"], row["version"], row["result"], row["error"]) == (CANCELLED, 3, None, None)
    assert await bench.topics(request_id) == ["request.accepted", "request.processing", "request.cancelled"]


async def wait_until_status(bench: Bench, request_id: str, status: str, *, timeout: float = RESULT_TIMEOUT) -> None:
    async def reached() -> bool:
        return await status_of(bench, request_id) == status

    await assert_eventually(reached, timeout=timeout, message=f"request {request_id} never {status}")


def local_activity_types(history: WorkflowHistory) -> list[str]:
    """The types of the local activities in the history, sorted (markers come in the order they ended)."""
    return sorted(run.activity_type for run in local_activities(history))


def retried_from_batches(history: WorkflowHistory) -> list[str]:
    """The requests every run_batch of the history handed back to be retried alone, sorted."""
    return sorted(request_id for retries in batch_retries(history) for request_id in retries)


# --- A kind's requests in one local activity ----------------------------------------------------


async def test_batch_of_fast_requests_of_one_kind_ends_each_done_once_with_its_own_events_in_one_local_activity(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    echo = Echo()
    bench = await bench_of(workflow_env, pool, {"echo": (echo, {})})
    request_ids = [await bench.accept("echo", {"n": n}) for n in range(5)]

    outcome, history = await run_batch_to_end(bench, request_ids)

    assert outcome == "5 requests ended"
    assert echo.calls == 5
    assert [(run.activity_type, run.attempt) for run in local_activities(history)] == [("run_batch", 1)]
    assert batch_retries(history) == [[]]
    assert scheduled_activities(history) == [], "no activity task: the batch is its workflow task alone"
    for n, request_id in enumerate(request_ids):
        await assert_done_once(bench, request_id, {"n": n})
    workflow_ids = await pool.fetch(
        "SELECT DISTINCT workflow_id FROM requests WHERE id = ANY ($1::uuid[])", [uuid.UUID(i) for i in request_ids]
    )
    assert [row["workflow_id"] for row in workflow_ids] == [history.workflow_id]


# --- Failures and retries -----------------------------------------------------------------------


async def test_permanent_failure_ends_failed_at_once_and_a_transient_one_is_retried_alone_the_rest_untouched(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    echo, refuses, flaky = Echo(), Refuses("the printer is on fire"), Flaky(failures=1)
    bench = await bench_of(
        workflow_env,
        pool,
        {"echo": (echo, SLOW_RETRIES), "refuses": (refuses, SLOW_RETRIES), "flaky": (flaky, SLOW_RETRIES)},
    )
    first = await bench.accept("echo", {"n": 1})
    refused = await bench.accept("refuses", {"n": 2})
    retried = await bench.accept("flaky", {"n": 3})
    last = await bench.accept("echo", {"n": 4})

    outcome, history = await run_batch_to_end(bench, [first, refused, retried, last])

    assert outcome == "4 requests ended"
    assert (echo.calls, refuses.calls, flaky.calls) == (2, 1, 2)
    assert flaky.payloads == [{"n": 3}] * 2
    assert local_activity_types(history) == ["run_batch"] * 3, "one run_batch per kind, each run once"
    assert {run.attempt for run in local_activities(history)} == {1}
    assert retried_from_batches(history) == [retried]
    assert scheduled_requests(history, "run_handler") == [[retried]], "only the transient failure runs again"
    assert handler_attempts(history, "run_handler") == [1]
    assert workflow_duration_seconds(history) >= 600, "the policy's first back-off passed before the retry"
    await assert_failed(bench, refused, {"type": "PermanentError", "message": "the printer is on fire"})
    await assert_done_once(bench, retried, {"attempts": 2})
    await assert_done_once(bench, first, {"n": 1})
    await assert_done_once(bench, last, {"n": 4})


async def test_request_failing_every_attempt_ends_failed_after_max_attempts_in_all_with_the_last_error(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    always_fails, echo = Flaky(failures=None), Echo()
    options = {"max_attempts": 3, "initial_retry_seconds": 600, "max_retry_seconds": 3600}
    bench = await bench_of(workflow_env, pool, {"doomed": (always_fails, options), "echo": (echo, {})})
    doomed = await bench.accept("doomed")
    fine = await bench.accept("echo", {"n": 1})

    outcome, history = await run_batch_to_end(bench, [doomed, fine])

    assert outcome == "2 requests ended"
    assert always_fails.calls == 3, "one attempt in the batch, then the policy's other two alone"
    assert retried_from_batches(history) == [doomed]
    assert local_activity_types(history) == ["finish_request", "run_batch", "run_batch"], "FAILED after the last"
    assert scheduled_requests(history, "run_handler") == [[doomed]]
    assert handler_attempts(history, "run_handler") == [2]
    assert workflow_duration_seconds(history) >= 600 + 1200, "both back-offs passed, as in a workflow of its own"
    await assert_failed(bench, doomed, {"type": "RuntimeError", "message": "transient failure 3"})
    await assert_done_once(bench, fine, {"n": 1})


async def test_transient_failure_of_a_kind_with_one_attempt_ends_failed_in_the_batch_with_no_retry(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    flaky, echo = Flaky(failures=1), Echo()
    bench = await bench_of(workflow_env, pool, {"once": (flaky, {"max_attempts": 1}), "echo": (echo, {})})
    once = await bench.accept("once")
    fine = await bench.accept("echo", {"n": 1})

    outcome, history = await run_batch_to_end(bench, [once, fine])

    assert outcome == "2 requests ended"
    assert flaky.calls == 1
    assert batch_retries(history) == [[], []], "its run_batch recorded FAILED itself"
    assert scheduled_activities(history) == []
    await assert_failed(bench, once, {"type": "RuntimeError", "message": "transient failure 1"})
    await assert_done_once(bench, fine, {"n": 1})


async def test_handler_timing_out_in_the_batch_is_a_failed_attempt_retried_alone_by_its_policy(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    stuck_once, echo = Gate(times=1), Echo()  # its first call waits past its 1 s timeout; the next returns
    bench = await bench_of(
        workflow_env, pool, {"slow": (stuck_once, {"start_to_close_seconds": 1} | SLOW_RETRIES), "echo": (echo, {})}
    )
    slow = await bench.accept("slow", {"n": 1})
    fine = await bench.accept("echo", {"n": 2})

    outcome, history = await run_batch_to_end(bench, [slow, fine])

    assert outcome == "2 requests ended"
    assert stuck_once.cancelled.is_set(), "the timeout stopped the first call"
    assert stuck_once.calls == 2
    assert retried_from_batches(history) == [slow]
    assert scheduled_requests(history, "run_handler") == [[slow]]
    assert handler_attempts(history, "run_handler") == [1]
    await assert_done_once(bench, slow, {"n": 1})
    await assert_done_once(bench, fine, {"n": 2})


async def test_handler_timing_out_on_every_attempt_ends_failed_as_a_timeout(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    stuck = Gate()
    options = {"start_to_close_seconds": 1, "max_attempts": 2, "initial_retry_seconds": 600}
    bench = await bench_of(workflow_env, pool, {"stuck": (stuck, options)})
    request_id = await bench.accept("stuck")

    try:
        outcome, history = await run_batch_to_end(bench, [request_id])
    finally:
        stuck.release.set()  # the attempt alone is abandoned by Temporal's timeout; let its call end

    assert outcome == "1 requests ended"
    assert stuck.calls == 2
    assert batch_retries(history) == [[request_id]]
    assert scheduled_requests(history, "run_handler") == [[request_id]]
    await assert_failed(bench, request_id, {"type": "Timeout", "message": "handler timed out (START_TO_CLOSE)"})


async def test_fast_requests_are_done_while_a_long_one_of_their_kind_in_the_same_local_activity_is_still_processing(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    long, echo = Gate(), Echo()

    async def long_or_fast(payload: Any) -> Any:
        """One kind, so one run_batch: the request {"n": 0} waits for the gate, the others return at once."""
        return await (long if payload["n"] == 0 else echo)(payload)

    bench = await bench_of(workflow_env, pool, {"mixed": (long_or_fast, {})})
    slow = await bench.accept("mixed", {"n": 0})
    fast = [await bench.accept("mixed", {"n": n}) for n in (1, 2)]

    async with bench.worker(), released_on_exit(long):
        handle = await bench.start_batch([slow, *fast])
        await asyncio.wait_for(long.started.wait(), RESULT_TIMEOUT)
        for request_id in fast:
            await wait_until_status(bench, request_id, DONE)
        held = await bench.request(slow)
        long.release.set()
        outcome = await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
        history = await handle.fetch_history()

    assert (held["status"], held["completed_at"]) == (PROCESSING, None)
    assert outcome == "3 requests ended"
    for n, request_id in enumerate(fast, start=1):
        await assert_done_once(bench, request_id, {"n": n})
    await assert_done_once(bench, slow, {"n": 0})
    assert (long.calls, echo.calls) == (1, 2)
    assert batch_retries(history) == [[]], "one run_batch for the kind"
    assert scheduled_activities(history) == []


async def test_transient_failure_of_a_fast_kind_is_retried_alone_while_a_slow_kind_of_the_batch_still_runs(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    slow_handler, flaky = Gate(), Flaky(failures=1)
    bench = await bench_of(
        workflow_env, pool, {"slow": (slow_handler, {}), "flaky": (flaky, {"initial_retry_seconds": 1})}
    )
    slow = await bench.accept("slow", {"n": 1})
    retried = await bench.accept("flaky", {"n": 2})

    async with bench.worker(), released_on_exit(slow_handler):
        handle = await bench.start_batch([slow, retried])
        await asyncio.wait_for(slow_handler.started.wait(), RESULT_TIMEOUT)
        await wait_until_status(bench, retried, DONE, timeout=HELD_WORKFLOW_TASK_SECONDS)
        held = await bench.request(slow)
        slow_handler.release.set()
        outcome = await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
        history = await handle.fetch_history()

    assert (held["status"], held["completed_at"]) == (PROCESSING, None), "the retry did not wait for the slow kind"
    assert outcome == "2 requests ended"
    assert (slow_handler.calls, flaky.calls) == (1, 2)
    assert sorted(batch_retries(history)) == [[], [retried]], "one run_batch per kind"
    assert scheduled_requests(history, "run_handler") == [[retried]]
    assert handler_attempts(history, "run_handler") == [1]
    await assert_done_once(bench, retried, {"attempts": 2})
    await assert_done_once(bench, slow, {"n": 1})


# --- Cancellation -------------------------------------------------------------------------------


async def test_cancel_signal_for_a_request_running_in_the_batch_stops_its_handler_and_the_others_go_on(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    doomed, held, echo = Gate(), Gate(), Echo()

    async def doomed_or_held(payload: Any) -> Any:
        """One kind, so both wait in the same run_batch: {"n": 0} at one gate, the other at another."""
        return await (doomed if payload["n"] == 0 else held)(payload)

    bench = await bench_of(workflow_env, pool, {"gated": (doomed_or_held, {}), "echo": (echo, {})})
    cancelled = await bench.accept("gated", {"n": 0})
    waiting = await bench.accept("gated", {"n": 1})
    fast = await bench.accept("echo", {"n": 2})

    async with bench.worker(), released_on_exit(doomed, held):
        handle = await bench.start_batch([cancelled, waiting, fast])
        await asyncio.wait_for(asyncio.gather(doomed.started.wait(), held.started.wait()), RESULT_TIMEOUT)
        # As the relay does (outbox_cdc/cancel.py): CANCELLED first, since the workflow may read the
        # signal only when its task next completes (the local activity holds it), then the signal.
        assert await transition(pool, cancelled, CANCELLED, (INIT, PROCESSING)) is not None
        await handle.signal(CANCEL_REQUEST_SIGNAL, cancelled)
        await asyncio.wait_for(doomed.cancelled.wait(), CANCEL_NOTICED_SECONDS)  # run_batch looks each second
        assert await status_of(bench, waiting) == PROCESSING, "the other handlers of the batch go on"
        held.release.set()
        outcome = await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
        history = await handle.fetch_history()

    assert outcome == "3 requests ended"
    assert (doomed.calls, held.calls, echo.calls) == (1, 1, 1)
    assert batch_retries(history) == [[], []], "a stopped handler is not handed back to be retried"
    assert scheduled_activities(history) == [], "a cancelled request is not retried"
    await assert_cancelled_while_processing(bench, cancelled)
    await assert_done_once(bench, waiting, {"n": 1})
    await assert_done_once(bench, fast, {"n": 2})


async def test_cancel_signal_for_a_heartbeating_request_running_alone_cancels_its_activity_and_the_others_go_on(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    sleeper, echo = Heartbeating(seconds=30), Echo()
    bench = await bench_of(
        workflow_env,
        pool,
        {"sleeper": (sleeper, {"start_to_close_seconds": 3600, "heartbeat_seconds": 2}), "echo": (echo, {})},
    )
    cancelled = await bench.accept("sleeper")
    fast = [await bench.accept("echo", {"n": n}) for n in (1, 2)]

    async with bench.worker():
        handle = await bench.start_batch([cancelled, *fast])
        await asyncio.wait_for(sleeper.started.wait(), RESULT_TIMEOUT)
        await handle.signal(CANCEL_REQUEST_SIGNAL, cancelled)
        outcome = await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
        await asyncio.wait_for(sleeper.cancelled.wait(), RESULT_TIMEOUT)  # the next heartbeat carries the cancel
        history = await handle.fetch_history()

    assert outcome == "3 requests ended"
    assert batch_retries(history) == [[]], "one run_batch, the echo kind's: a heartbeating kind runs alone"
    assert scheduled_requests(history, "run_handler") == [[cancelled]], "its first attempt, alone from the start"
    await assert_cancelled_while_processing(bench, cancelled)
    for n, request_id in enumerate(fast, start=1):
        await assert_done_once(bench, request_id, {"n": n})


async def test_cancel_signal_naming_a_request_not_in_the_batch_changes_nothing(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    held, echo = Gate(), Echo()
    bench = await bench_of(workflow_env, pool, {"held": (held, {}), "echo": (echo, {})})
    member = await bench.accept("held", {"n": 1})
    outsider = await bench.accept("echo", {"n": 2})  # accepted, in no batch yet

    async with bench.worker(), released_on_exit(held):
        handle = await bench.start_batch([member])
        await asyncio.wait_for(held.started.wait(), RESULT_TIMEOUT)
        await handle.signal(CANCEL_REQUEST_SIGNAL, outsider)
        await handle.signal(CANCEL_REQUEST_SIGNAL, str(uuid.uuid4()))
        held.release.set()
        outcome = await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
        history = await handle.fetch_history()

    assert outcome == "1 requests ended"
    assert not held.cancelled.is_set()
    await assert_done_once(bench, member, {"n": 1})
    row = await bench.request(outsider)
    assert (row["status"], row["version"]) == (INIT, 1)
    assert await bench.topics(outsider) == ["request.accepted"]
    assert local_activity_types(history) == ["run_batch"], "no finish_request: nothing recorded for either signal"


async def test_cancelling_the_workflow_ends_every_unfinished_request_cancelled_and_stops_their_handlers(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    together, sleeper, echo = Gate(), Heartbeating(seconds=30), Echo()
    bench = await bench_of(
        workflow_env,
        pool,
        {
            "held": (together, {}),
            "sleeper": (sleeper, {"start_to_close_seconds": 3600, "heartbeat_seconds": 2}),
            "echo": (echo, {}),
        },
    )
    in_batch = await bench.accept("held")
    alone = await bench.accept("sleeper")
    finished = await bench.accept("echo", {"n": 1})

    async with bench.worker(), released_on_exit(together):
        handle = await bench.start_batch([in_batch, alone, finished])
        await asyncio.wait_for(asyncio.gather(together.started.wait(), sleeper.started.wait()), RESULT_TIMEOUT)
        await wait_until_status(bench, finished, DONE)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:  # read at the next workflow-task heartbeat
            await asyncio.wait_for(handle.result(), HELD_WORKFLOW_TASK_SECONDS)
        await asyncio.wait_for(asyncio.gather(together.cancelled.wait(), sleeper.cancelled.wait()), RESULT_TIMEOUT)
        description = await handle.describe()
        history = await handle.fetch_history()

    assert isinstance(failure.value.cause, CancelledError)
    assert description.status == WorkflowExecutionStatus.CANCELED
    assert together.calls == 1, "a cancelled batch does not run its requests again alone"
    assert scheduled_requests(history, "run_handler") == [[alone]]
    assert "finish_requests" in local_activity_types(history), "CANCELLED recorded for all in one statement"
    await assert_cancelled_while_processing(bench, in_batch)
    await assert_cancelled_while_processing(bench, alone)
    await assert_done_once(bench, finished, {"n": 1})


async def test_request_cancelled_before_its_batch_started_is_not_run_and_the_others_are(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    echo = Echo()
    bench = await bench_of(workflow_env, pool, {"echo": (echo, {})})
    cancelled = await bench.accept("echo", {"n": 1})
    others = [await bench.accept("echo", {"n": n}) for n in (2, 3)]
    assert await transition(pool, cancelled, CANCELLED, (INIT,))

    outcome, history = await run_batch_to_end(bench, [cancelled, *others])

    assert outcome == "3 requests ended"
    assert echo.calls == 2
    assert batch_retries(history) == [[]]
    assert scheduled_activities(history) == []
    row = await bench.request(cancelled)
    assert (row["status"], row["version"], row["result"]) == (CANCELLED, 2, None)
    assert await bench.topics(cancelled) == ["request.accepted", "request.cancelled"]
    for n, request_id in enumerate(others, start=2):
        await assert_done_once(bench, request_id, {"n": n})


# --- The batch activity run again after its worker died -----------------------------------------


async def test_batch_activity_run_again_after_its_worker_died_reruns_only_requests_still_processing(
    workflow_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    echo, gate = Echo(), Gate(times=1)  # the gate's first call hangs until its worker "dies"
    bench = await bench_of(workflow_env, pool, {"echo": (echo, {}), "gate": (gate, {})})
    finished = await bench.accept("echo", {"n": 1})
    interrupted = await bench.accept("gate", {"n": 2})
    batch = RunBatchInput([await bench.request_input(finished), await bench.request_input(interrupted)])
    activities = RequestActivities(pool, bench.registry)

    first = ActivityEnvironment()
    died = asyncio.create_task(first.run(activities.run_batch, batch))
    await asyncio.wait_for(gate.started.wait(), RESULT_TIMEOUT)
    await wait_until_status(bench, finished, DONE)
    done_before = dict(await bench.request(finished))
    first.cancel()  # as far as Postgres can tell, a worker that died mid-batch
    with pytest.raises(asyncio.CancelledError):
        await died
    assert await status_of(bench, interrupted) == PROCESSING

    output = await ActivityEnvironment().run(activities.run_batch, batch)

    assert output == RunBatchOutput(retries=[])
    assert (echo.calls, gate.calls) == (1, 2)
    assert dict(await bench.request(finished)) == done_before
    await assert_done_once(bench, finished, {"n": 1})
    await assert_done_once(bench, interrupted, {"n": 2})


# --- Replay of recorded histories ---------------------------------------------------------------


def recorded_batch_histories() -> list[Path]:
    return sorted(BATCH_HISTORIES.glob("*.json"))


def load_history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text(encoding="utf-8"))


def test_recorded_batch_histories_cover_done_mixed_and_both_cancelled_paths() -> None:
    assert {path.stem for path in recorded_batch_histories()} >= RECORDED_BATCH_PATHS, (
        "record them with: .venv/bin/python -m tests.workflows.record_histories"
    )


@pytest.mark.parametrize("path", recorded_batch_histories(), ids=lambda path: path.stem)
async def test_recorded_batch_history_replays_on_the_current_workflow_without_nondeterminism(path: Path) -> None:
    replayer = Replayer(workflows=[ProcessBatchWorkflow, ProcessRequestWorkflow])

    result = await replayer.replay_workflow(load_history(path), raise_on_replay_failure=False)

    assert result.replay_failure is None, f"{path.name}: {result.replay_failure!r}"


@pytest.mark.parametrize(
    "incompatible",
    [incompatible_workflow.ProcessBatchWorkflow, incompatible_workflow.RegularActivityBatchWorkflow],
    ids=["an_activity_per_request", "run_batch_as_a_regular_activity"],
)
async def test_replay_fails_as_nondeterministic_when_the_batch_workflow_no_longer_matches_a_recorded_history(
    incompatible: type,
) -> None:
    replayer = Replayer(workflows=[incompatible])

    history = load_history(BATCH_HISTORIES / "batch_done.json")

    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)

    assert isinstance(result.replay_failure, NondeterminismError), repr(result.replay_failure)
