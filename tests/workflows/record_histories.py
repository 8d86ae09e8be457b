"""Record ProcessBatchWorkflow, ProcessRequestWorkflow and WebhookRetryWorkflow histories for the replay
tests, from the real workflows and activities.

    .venv/bin/python -m tests.workflows.record_histories              # record the missing ones
    .venv/bin/python -m tests.workflows.record_histories --overwrite  # record all again

Run it from the repository root. It starts a throwaway Postgres (from the wheel) and Temporal's
time-skipping test server, runs one request down each path (DONE, FAILED, CANCELLED while running,
CANCELLED before its workflow started) and writes each history as `tests/workflows/histories/<path>.json`
(the same JSON as `temporal workflow show --output json`), then stops both servers. The
`options_from_worker_*.json` histories were recorded before handler options travelled in the
workflow's input (the workflow then asked a worker for them first); they stay to prove that
such runs still replay. Batches (ProcessBatchWorkflow, which relays start now) go down theirs: all
DONE; a permanent failure and a retry alone; requests cancelled by signal, in the batch and alone;
the whole workflow cancelled. Their histories go to `tests/workflows/histories/batch/batch_<path>.json`.
Webhook deliveries (WebhookRetryWorkflow, against a real receiver) go down theirs: every attempt
failing until the 8-attempt schedule ends, success after failures, Retry-After waits, a resend
(`attempt_now`) during a wait and with the start, a custom schedule, the endpoint disabled mid-way.
They go to `tests/workflows/histories/webhook_retry/<path>.json`; `eight_failed_attempts` and
`retry_after_then_success` there were recorded before resends signalled the workflow and stay too.
The workflow has no cancellation path (nothing in ackflow cancels it), so no history has one.
A workflow kind (the example `pipeline`, examples/pipeline.py) runs as a child of its batch: each of
its scenarios (approved, rejected, cancelled while it waits for approval) writes two histories, the
batch's to `tests/workflows/histories/batch/batch_<path>.json` and the child's (ExamplePipeline) to
`tests/workflows/histories/work/<path>.json`.

Keep the files once committed: they stand for workflows already running in production, and
`test_process_request_workflow.py` and `test_process_batch_workflow.py` replay each one on the
current code. If a change to a workflow fails that replay, the change would break those workflows:
guard it with `workflow.patched()` rather than recording again. Record again only the histories no
running workflow can still have: delete those files and run without `--overwrite` (which records
every history again, the ProcessRequestWorkflow ones too); add a new path by adding a scenario below
and running without `--overwrite`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

import examples.pipeline  # noqa: F401  (registers the example workflow kind `pipeline`)
from ackflow import devstack
from ackflow.contracts import (
    CANCEL_REQUEST_SIGNAL,
    CANCELLED,
    DONE,
    FAILED,
    INIT,
    INPUT_SIGNAL,
    PROCESSING,
    WEBHOOK_ATTEMPT_NOW_SIGNAL,
    DeliveryState,
    HandlerOptions,
    work_workflow_id,
)
from ackflow.db.migrate import migrate
from ackflow.db.pool import create_pool
from ackflow.db.transitions import transition
from ackflow.handlers import HandlerRegistry
from ackflow.handlers import registry as registered_on_import
from ackflow.tenants import create_tenant
from tests.helpers import assert_eventually
from tests.receiver import Reply
from tests.workflows.harness import Bench, Echo, Flaky, Gate, Heartbeating, Refuses, start_time_skipping
from tests.workflows.webhook_rig import WebhookRig, timers_started, webhook_rig

HISTORIES = Path(__file__).parent / "histories"
BATCH_HISTORIES = HISTORIES / "batch"
WEBHOOK_HISTORIES = HISTORIES / "webhook_retry"
WORK_HISTORIES = HISTORIES / "work"
RESULT_TIMEOUT = 30.0

Scenario = Callable[[Bench], Awaitable[WorkflowHandle[object, object]]]
WebhookScenario = Callable[[WebhookRig], Awaitable[WorkflowHandle[Any, str]]]
# A workflow kind's scenario: its batch's handle and its own run's (the child workflow).
WorkScenario = Callable[[Bench], Awaitable[tuple[WorkflowHandle[Any, Any], WorkflowHandle[Any, Any]]]]


async def done(bench: Bench) -> WorkflowHandle[object, object]:
    request_id = await bench.accept("echo", {"hello": "world"})
    handle = await bench.start(request_id, "echo")
    await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
    return handle


async def failed(bench: Bench) -> WorkflowHandle[object, object]:
    request_id = await bench.accept("refuses", {})
    handle = await bench.start(request_id, "refuses")
    await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
    return handle


async def cancelled_while_running(bench: Bench) -> WorkflowHandle[object, object]:
    sleeper = bench.registry.get("sleeper")
    assert sleeper is not None and isinstance(sleeper.function, Heartbeating)
    request_id = await bench.accept("sleeper", {})
    handle = await bench.start(request_id, "sleeper")
    await asyncio.wait_for(sleeper.function.started.wait(), RESULT_TIMEOUT)
    await handle.cancel()
    try:
        await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
    except WorkflowFailureError:
        pass
    else:
        raise AssertionError("the cancelled workflow completed instead of ending cancelled")
    await asyncio.wait_for(sleeper.function.cancelled.wait(), RESULT_TIMEOUT)
    return handle


async def cancelled_before_start(bench: Bench) -> WorkflowHandle[object, object]:
    request_id = await bench.accept("echo", {})
    assert await transition(bench.pool, request_id, CANCELLED, (INIT,))
    handle = await bench.start(request_id, "echo")
    await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
    return handle


SCENARIOS: dict[str, Scenario] = {
    "done": done,
    "failed": failed,
    "cancelled_while_running": cancelled_while_running,
    "cancelled_before_start": cancelled_before_start,
}


def handler_of(bench: Bench, kind: str) -> object:
    handler = bench.registry.get(kind)
    assert handler is not None
    return handler.function


async def batch_done(bench: Bench) -> WorkflowHandle[object, object]:
    request_ids = [await bench.accept("echo", {"n": n}) for n in range(3)]
    handle = await bench.start_batch(request_ids)
    await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
    return handle


async def batch_mixed(bench: Bench) -> WorkflowHandle[object, object]:
    request_ids = [
        await bench.accept("echo", {"n": 1}),
        await bench.accept("refuses", {}),
        await bench.accept("flaky", {}),  # fails once in the batch, then is DONE alone
    ]
    handle = await bench.start_batch(request_ids)
    await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
    return handle


async def batch_cancelled_by_signal(bench: Bench) -> WorkflowHandle[object, object]:
    gate, sleeper = handler_of(bench, "gate"), handler_of(bench, "sleeper")
    assert isinstance(gate, Gate) and isinstance(sleeper, Heartbeating)
    in_batch, alone = await bench.accept("gate", {}), await bench.accept("sleeper", {})
    handle = await bench.start_batch([in_batch, alone, await bench.accept("echo", {"n": 1})])
    await asyncio.wait_for(asyncio.gather(gate.started.wait(), sleeper.started.wait()), RESULT_TIMEOUT)
    # As the relay does (outbox_cdc/cancel.py): CANCELLED first, which run_batch notices within a second,
    # then the signal, which the workflow may read only once its local activities let its task complete.
    assert await transition(bench.pool, in_batch, CANCELLED, (INIT, PROCESSING))
    await handle.signal(CANCEL_REQUEST_SIGNAL, in_batch)
    await asyncio.wait_for(gate.cancelled.wait(), RESULT_TIMEOUT)
    await handle.signal(CANCEL_REQUEST_SIGNAL, alone)
    await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
    await asyncio.wait_for(sleeper.cancelled.wait(), RESULT_TIMEOUT)
    return handle


async def batch_workflow_cancelled(bench: Bench) -> WorkflowHandle[object, object]:
    gate, sleeper = handler_of(bench, "gate"), handler_of(bench, "sleeper")
    assert isinstance(gate, Gate) and isinstance(sleeper, Heartbeating)
    finished = await bench.accept("echo", {"n": 1})
    handle = await bench.start_batch([await bench.accept("gate", {}), await bench.accept("sleeper", {}), finished])
    await asyncio.wait_for(asyncio.gather(gate.started.wait(), sleeper.started.wait()), RESULT_TIMEOUT)

    async def finished_done() -> bool:
        return bool((await bench.request(finished))["status"] == DONE)

    await assert_eventually(finished_done, timeout=RESULT_TIMEOUT)
    await handle.cancel()
    try:
        await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
    except WorkflowFailureError:
        pass
    else:
        raise AssertionError("the cancelled workflow completed instead of ending cancelled")
    await asyncio.wait_for(asyncio.gather(gate.cancelled.wait(), sleeper.cancelled.wait()), RESULT_TIMEOUT)
    return handle


async def batch_handed_over(bench: Bench) -> WorkflowHandle[object, object]:
    """A handler still running when run_batch's budget is spent goes on, awaited on its worker's queue."""
    gate = handler_of(bench, "gate")
    assert isinstance(gate, Gate)
    handle = await bench.start_batch([await bench.accept("gate", {}), await bench.accept("echo", {"n": 1})])

    async def awaited() -> bool:
        history = await handle.fetch_history()
        return any(
            e.activity_task_scheduled_event_attributes.activity_type.name == "await_requests"
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
        )

    await assert_eventually(awaited, timeout=RESULT_TIMEOUT)
    gate.release.set()
    await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
    return handle


BATCH_SCENARIOS: dict[str, Scenario] = {
    "batch_handed_over": batch_handed_over,
    "batch_done": batch_done,
    "batch_mixed": batch_mixed,
    "batch_cancelled_by_signal": batch_cancelled_by_signal,
    "batch_workflow_cancelled": batch_workflow_cancelled,
}


async def pipeline_waiting_for_approval(bench: Bench) -> tuple[str, WorkflowHandle[Any, Any], WorkflowHandle[Any, Any]]:
    """A pipeline request batched with an echo, run until its workflow waits for `approval`."""
    request_id = await bench.accept("pipeline", {"items": 3, "step_seconds": 0})
    handle = await bench.start_batch([request_id, await bench.accept("echo", {"n": 1})])

    async def waiting() -> bool:
        row = await bench.pool.fetchrow("SELECT waiting FROM requests WHERE id = $1::uuid", request_id)
        return row is not None and row["waiting"] is not None

    await assert_eventually(waiting, timeout=RESULT_TIMEOUT, message="the pipeline never waited for approval")
    return request_id, handle, bench.client.get_workflow_handle(work_workflow_id(request_id))


async def deliver_approval(work: WorkflowHandle[Any, Any], value: Any) -> None:
    """The signal the relay sends for `POST /v1/requests/{id}/input` (outbox_cdc TemporalDispatcher.deliver_input)."""
    await work.signal(INPUT_SIGNAL, {"name": "approval", "value": value, "seq": 1})


async def pipeline_approved(bench: Bench) -> tuple[WorkflowHandle[Any, Any], WorkflowHandle[Any, Any]]:
    request_id, handle, work = await pipeline_waiting_for_approval(bench)
    await deliver_approval(work, {"approved": True, "by": "ana"})
    await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
    assert (await bench.request(request_id))["status"] == DONE
    return handle, work


async def pipeline_rejected(bench: Bench) -> tuple[WorkflowHandle[Any, Any], WorkflowHandle[Any, Any]]:
    request_id, handle, work = await pipeline_waiting_for_approval(bench)
    await deliver_approval(work, {"approved": False, "by": "ana"})
    await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
    assert (await bench.request(request_id))["status"] == FAILED
    return handle, work


async def pipeline_cancelled_while_waiting(bench: Bench) -> tuple[WorkflowHandle[Any, Any], WorkflowHandle[Any, Any]]:
    request_id, handle, work = await pipeline_waiting_for_approval(bench)
    # As the relay does (outbox_cdc/cancel.py): CANCELLED first, then the signal to the batch.
    assert await transition(bench.pool, request_id, CANCELLED, (INIT, PROCESSING))
    await handle.signal(CANCEL_REQUEST_SIGNAL, request_id)
    await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
    assert (await work.describe()).status == WorkflowExecutionStatus.CANCELED
    return handle, work


WORK_SCENARIOS: dict[str, WorkScenario] = {
    "pipeline_approved": pipeline_approved,
    "pipeline_rejected": pipeline_rejected,
    "pipeline_cancelled_while_waiting": pipeline_cancelled_while_waiting,
}


async def retried(rig: WebhookRig, **start: Any) -> WorkflowHandle[Any, str]:
    """A delivery whose first attempt fails, then its retry workflow started (with `start`'s options)."""
    delivery_id = await rig.delivery()
    first = await rig.first_attempt(delivery_id)
    assert first.state == DeliveryState.RETRYING, first
    return await rig.start_retries(delivery_id, first, **start)


async def until_waiting(rig: WebhookRig, handle: WorkflowHandle[Any, str], waits: int) -> None:
    """Advance the clock half a minute at a time until the workflow is in its `waits`-th wait (each of the
    first three is at least 4 s, 4 min and 24 min long, so it is caught before it runs out)."""
    for _ in range(600):
        if await timers_started(handle) >= waits:
            return
        await rig.env.sleep(timedelta(seconds=30))
    raise AssertionError(f"the workflow never began wait {waits}")


async def ended(rig: WebhookRig, handle: WorkflowHandle[Any, str], expected: str) -> WorkflowHandle[Any, str]:
    outcome = await rig.run_to_end(handle)
    assert outcome == expected, (outcome, expected)
    return handle


async def schedule_ran_out(rig: WebhookRig) -> WorkflowHandle[Any, str]:
    rig.receiver.reply_with(*[500] * 8)  # the first attempt and the seven of the workflow
    return await ended(rig, await retried(rig), "failed")


async def succeeded_after_failures(rig: WebhookRig) -> WorkflowHandle[Any, str]:
    rig.receiver.reply_with(500, 502, 500, 200)
    return await ended(rig, await retried(rig), "succeeded")


async def retry_after_then_succeeded(rig: WebhookRig) -> WorkflowHandle[Any, str]:
    rig.receiver.reply_with(Reply(429, {"retry-after": "7200"}), Reply(503, {"retry-after": "60"}), 200)
    return await ended(rig, await retried(rig), "succeeded")


async def resent_during_a_wait(rig: WebhookRig) -> WorkflowHandle[Any, str]:
    rig.receiver.reply_with(500, 500, 500, 200)
    handle = await retried(rig)
    await until_waiting(rig, handle, 3)  # the 30-minute wait after the third attempt
    await handle.signal(WEBHOOK_ATTEMPT_NOW_SIGNAL)
    return await ended(rig, handle, "succeeded")


async def resent_with_the_start(rig: WebhookRig) -> WorkflowHandle[Any, str]:
    rig.receiver.reply_with(500, 200)
    return await ended(rig, await retried(rig, attempt_now=True), "succeeded")


async def custom_schedule_ran_out(rig: WebhookRig) -> WorkflowHandle[Any, str]:
    rig.receiver.reply_with(*[500] * 3)
    return await ended(rig, await retried(rig, schedule_seconds=[60.0, 120.0]), "failed")


async def endpoint_disabled_during_the_schedule(rig: WebhookRig) -> WorkflowHandle[Any, str]:
    rig.receiver.reply_with(*[500] * 8)
    handle = await retried(rig)
    await until_waiting(rig, handle, 2)
    await rig.pool.execute("UPDATE webhook_endpoints SET enabled = false WHERE id = $1", rig.endpoint_id)
    return await ended(rig, handle, "failed")


WEBHOOK_SCENARIOS: dict[str, WebhookScenario] = {
    "schedule_ran_out": schedule_ran_out,
    "succeeded_after_failures": succeeded_after_failures,
    "retry_after_then_succeeded": retry_after_then_succeeded,
    "resent_during_a_wait": resent_during_a_wait,
    "resent_with_the_start": resent_with_the_start,
    "custom_schedule_ran_out": custom_schedule_ran_out,
    "endpoint_disabled_during_the_schedule": endpoint_disabled_during_the_schedule,
}


def history_path(name: str) -> Path:
    if name in WEBHOOK_SCENARIOS:
        return WEBHOOK_HISTORIES / f"{name}.json"
    if name in WORK_SCENARIOS:
        return WORK_HISTORIES / f"{name}.json"
    return (BATCH_HISTORIES if name in BATCH_SCENARIOS else HISTORIES) / f"{name}.json"


def batch_history_path(name: str) -> Path:
    """Where a workflow kind's scenario writes its batch's history."""
    return BATCH_HISTORIES / f"batch_{name}.json"


def scenario_registry() -> HandlerRegistry:
    registry = HandlerRegistry()
    registry.add("echo", Echo(), HandlerOptions(start_to_close_seconds=30))
    registry.add("refuses", Refuses("refused on purpose"), HandlerOptions(start_to_close_seconds=30))
    registry.add("sleeper", Heartbeating(seconds=30), HandlerOptions(start_to_close_seconds=3600, heartbeat_seconds=2))
    registry.add("flaky", Flaky(failures=1), HandlerOptions(start_to_close_seconds=30, initial_retry_seconds=600))
    registry.add("gate", Gate(), HandlerOptions(start_to_close_seconds=30))
    pipeline = registered_on_import.get("pipeline")
    assert pipeline is not None and pipeline.workflow is not None, "examples.pipeline registers `pipeline`"
    registry.add_workflow("pipeline", pipeline.workflow, pipeline.activities, pipeline.options)
    return registry


async def run_scenario(
    env: WorkflowEnvironment, pool: asyncpg.Pool, name: str
) -> WorkflowHandle[Any, Any] | tuple[WorkflowHandle[Any, Any], WorkflowHandle[Any, Any]]:
    """Run one scenario on a fresh worker (and, for a webhook one, a fresh tenant, endpoint and receiver)."""
    if name in WEBHOOK_SCENARIOS:
        async with pool.acquire() as connection:
            tenant = await create_tenant(connection, f"tenant-{name}")
        async with webhook_rig(env, pool, tenant.tenant_id) as rig:
            # The clock moves only as the scenario moves it (see WebhookRig.run_to_end).
            with env.auto_time_skipping_disabled():
                return await WEBHOOK_SCENARIOS[name](rig)
    bench = await Bench.create(env.client, pool, scenario_registry())
    async with bench.worker():
        if name in WORK_SCENARIOS:
            return await WORK_SCENARIOS[name](bench)
        return await (SCENARIOS | BATCH_SCENARIOS)[name](bench)


def write_history(history: WorkflowHistory, path: Path) -> None:
    path.write_text(history.to_json() + "\n", encoding="utf-8")
    print(f"recorded {path} ({len(history.events)} events)")


async def record(database_url: str, names: list[str]) -> None:
    """Run each named scenario on a fresh worker and write its history."""
    connection = await asyncpg.connect(database_url)
    try:
        await migrate(connection)
    finally:
        await connection.close()
    pool = await create_pool(database_url)
    env: WorkflowEnvironment | None = None
    try:
        env = await start_time_skipping()
        for name in names:
            ran = await run_scenario(env, pool, name)
            if isinstance(ran, tuple):
                batch, work = ran
                write_history(await batch.fetch_history(), batch_history_path(name))
                write_history(await work.fetch_history(), history_path(name))
            else:
                write_history(await ran.fetch_history(), history_path(name))
    finally:
        if env is not None:
            await env.shutdown()
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overwrite", action="store_true", help="record again the histories that already exist")
    args = parser.parse_args(argv)
    # The FAILED and cancelled scenarios fail their handler on purpose; the SDK would log each with a traceback.
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    BATCH_HISTORIES.mkdir(parents=True, exist_ok=True)
    WEBHOOK_HISTORIES.mkdir(parents=True, exist_ok=True)
    WORK_HISTORIES.mkdir(parents=True, exist_ok=True)
    every = SCENARIOS | BATCH_SCENARIOS | WEBHOOK_SCENARIOS | WORK_SCENARIOS
    names = [name for name in every if args.overwrite or not history_path(name).exists()]
    if not names:
        print(f"every history is already in {HISTORIES}; pass --overwrite to record them again")
        return 0
    with tempfile.TemporaryDirectory(prefix="ackflow-histories-") as state:
        port = devstack.free_port()
        postgres = devstack.start_postgres(Path(state), port, fast_unsafe=True)
        try:
            postgres.wait_until_ready()
            asyncio.run(record(devstack.create_database(port, "histories"), names))
        finally:
            postgres.stop()
    # Drop the Temporal client's native handles while Python is still fully alive: left to interpreter
    # shutdown they can abort the process (temporalio/sdk-python#300).
    gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
