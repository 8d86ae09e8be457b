"""ProcessBatchWorkflow: the requests a relay admitted together, each to its own end.

The dev server pays about 25 ms of its CPU per workflow whatever the workflow does, so one workflow
per request caps end to end near 40 requests/s on 2 cores. A batch pays it once for up to
ACKFLOW_BATCH_MAX requests; under light load a batch holds one request and costs less than a
workflow per request did (one workflow task, no activity task).

How a batch runs its requests was chosen by measuring the shapes against each other in ackflow
itself (the bench's stack, echo handler, POST -> DONE at 116 requests/s open loop, on the 2-core
machine; the shapes behind a switch since removed):
- one *regular* activity for the batch's first attempts: p50 391 ms, p99 755 ms (two workflow
  tasks and an activity task a batch: each a round trip through the dev server's matching);
- one *local* activity instead: p50 189 ms, p99 370 ms, and with the worker's pollers and the dev
  server's single task-queue partition tuned (activities/worker.py, ackflow/devstack.py): p50
  125-138 ms, p99 224-247 ms. A batch is then one workflow task: start, the local activity's
  marker, complete.
- A regular activity per request (raw Temporal, a workflow of 50 activities: 310 items/s, 4.1 ms
  of dev-server CPU an item) costs ten times a local activity's server CPU (0.45 ms) and gives
  each request what the shape below gives it anyway, so it was not kept.
So:
- Requests of kinds without a heartbeat timeout run their first attempt together, in one
  `run_batch` local activity per kind in the batch (a slow kind never holds back another's
  retries): one statement moves them all to PROCESSING, each handler runs under its kind's own
  timeout, and each outcome is recorded as soon as it ends (grouped with whatever ended meanwhile
  into one statement), so a slow handler never holds a fast one back.
- `run_batch` waits for its handlers at most 4 s (LOCAL_BUDGET_SECONDS): a local activity holds
  its workflow's task, and with it one of the worker's workflow-task slots. Handlers still running
  go on where they run, awaited by `await_requests` on that worker's own task queue (heartbeating);
  if that worker dies, they run alone, as after any crash.
- A request whose first attempt failed and may be retried goes on alone: its own `run_handler`
  activity with the rest of its kind's retry policy, once its kind's `run_batch` has returned (4 s
  at most), or for a handed-over handler once its `await_requests` has. A retry re-runs that
  request only.
- Kinds with a heartbeat timeout (long handlers that heartbeat to notice cancellation and crashes)
  run alone from the start, exactly as a single request's workflow ran them.
- A workflow kind (ackflow/workflow_kinds.py) runs alone too: PROCESSING, then the user's workflow
  as a child of the batch (`work-<request id>`), then DONE with its result or FAILED with its
  failure; cancelling the request cancels the child. Histories of before workflow kinds never take
  this path (no request in them names a workflow), so they replay as they ran.
- Cancelling one request: the relay records CANCELLED and signals `cancel_request`, which cancels
  the request's own activity if it runs alone; a handler in `run_batch` is stopped by the activity,
  which looks each second for requests of it that ended. Cancelling the workflow cancels them all.
- If `run_batch` itself keeps failing (Postgres away), every request still unfinished runs alone
  with its kind's whole retry policy. A worker that dies mid-batch is noticed when the workflow
  task times out (10 s); the next worker runs `run_batch` again for the requests still PROCESSING.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError, ChildWorkflowError, is_cancelled_exception

from ackflow.contracts import (
    CANCEL_REQUEST_SIGNAL,
    CANCELLED,
    FAILED,
    PROCESS_BATCH_WORKFLOW,
    AwaitRequestsInput,
    FinishInput,
    HandlerOptions,
    ProcessBatchInput,
    ProcessRequestInput,
    RunBatchInput,
    RunBatchOutput,
)
from workflows.request_steps import describe_failure, finish, finish_many, run_handler, run_work

# Beyond the longest handler timeout of the batch: time to record the outcomes.
BATCH_SLACK = timedelta(seconds=60)
# run_batch is retried only when it failed as a whole (Postgres away); after that, its requests run alone.
# Handlers it left running are awaited on their worker's own task queue; that worker gone (its
# activity not picked up, or silent, this long), they run alone, as after any crash.
HANDOVER_TIMEOUT = timedelta(seconds=30)
BATCH_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


def runs_together(request: ProcessRequestInput) -> bool:
    """Whether the request's first attempt runs in the batch activity (its kind is a handler that does
    not heartbeat; a workflow kind runs as its own child workflow)."""
    return request.handler is None or (request.handler.heartbeat_seconds is None and request.handler.workflow is None)


# Unsandboxed, as ProcessRequestWorkflow and for the same reason: it only sequences activities.
@workflow.defn(name=PROCESS_BATCH_WORKFLOW, sandboxed=False)
class ProcessBatchWorkflow:
    """Runs a batch's requests, each with its own timeout, retries, cancellation and outcome."""

    @workflow.init
    def __init__(self, batch: ProcessBatchInput) -> None:
        self._members = {request.request_id: request for request in batch.requests}
        self._alone: dict[str, asyncio.Task[None]] = {}  # request id -> its own activity, while it runs
        self._cancelled: set[str] = set()

    @workflow.run
    async def run(self, batch: ProcessBatchInput) -> str:
        together = [request for request in batch.requests if runs_together(request)]
        alone = [request for request in batch.requests if not runs_together(request)]
        try:
            await asyncio.gather(self._run_together(together), *(self._run_alone(r) for r in alone))
        except (asyncio.CancelledError, CancelledError, ActivityError) as error:
            if not is_cancelled_exception(error):  # a cancelled activity raises ActivityError(CancelledError)
                raise
            await finish_many([FinishInput(request.request_id, CANCELLED) for request in batch.requests])
            raise
        await workflow.wait_condition(workflow.all_handlers_finished)
        return f"{len(batch.requests)} requests ended"

    @workflow.signal(name=CANCEL_REQUEST_SIGNAL)
    async def cancel_request(self, request_id: str) -> None:
        """Cancel one request of the batch; the others go on."""
        if request_id not in self._members or request_id in self._cancelled:
            return
        self._cancelled.add(request_id)
        running = self._alone.get(request_id)
        if running is not None:
            running.cancel()
        await finish(FinishInput(request_id, CANCELLED))

    async def _run_together(self, requests: list[ProcessRequestInput]) -> None:
        kinds = sorted({request.kind for request in requests})
        await asyncio.gather(*(self._run_kind([r for r in requests if r.kind == kind]) for kind in kinds))

    async def _run_kind(self, requests: list[ProcessRequestInput]) -> None:
        longest = timedelta(seconds=max((r.handler or HandlerOptions()).start_to_close_seconds for r in requests))
        try:
            output: RunBatchOutput = await workflow.execute_local_activity(
                "run_batch",
                RunBatchInput(requests),
                result_type=RunBatchOutput,
                start_to_close_timeout=longest + BATCH_SLACK,
                retry_policy=BATCH_RETRY,
            )
        except ActivityError as failure:
            if isinstance(failure.cause, CancelledError):
                raise  # only the workflow's cancellation cancels the batch activity: no request runs again
            workflow.logger.warning("batch activity failed (%s); its requests run alone", failure.cause)
            await asyncio.gather(*(self._run_alone(r) for r in requests))
            return
        retries, lost = output.retries, output.lost
        if output.running and output.handover_queue:
            try:
                waited: RunBatchOutput = await workflow.execute_activity(
                    "await_requests",
                    AwaitRequestsInput(output.running),
                    result_type=RunBatchOutput,
                    task_queue=output.handover_queue,
                    start_to_close_timeout=longest + BATCH_SLACK,
                    schedule_to_start_timeout=HANDOVER_TIMEOUT,
                    heartbeat_timeout=HANDOVER_TIMEOUT,
                    retry_policy=RetryPolicy(maximum_attempts=1),
                )
                retries, lost = [*retries, *waited.retries], [*lost, *waited.lost]
            except ActivityError as failure:
                if isinstance(failure.cause, CancelledError):
                    raise
                workflow.logger.warning("the worker running %d handlers went away; they run alone", len(output.running))
                lost = [*lost, *output.running]
        await asyncio.gather(
            *(self._run_alone(self._members[retry.request_id], attempts_done=1) for retry in retries),
            *(self._run_alone(self._members[request_id]) for request_id in lost),
        )

    async def _run_alone(self, request: ProcessRequestInput, *, attempts_done: int = 0) -> None:
        if request.request_id in self._cancelled:
            return  # cancel_request recorded it
        task = asyncio.create_task(self._handle_alone(request, attempts_done))
        self._alone[request.request_id] = task
        try:
            await task
        except asyncio.CancelledError:
            if request.request_id not in self._cancelled:
                raise  # the whole workflow is being cancelled
        finally:
            self._alone.pop(request.request_id, None)

    async def _handle_alone(self, request: ProcessRequestInput, attempts_done: int) -> None:
        options = request.handler or HandlerOptions()
        if attempts_done:  # the batch's attempt failed: wait the policy's first backoff, as Temporal would
            await workflow.sleep(timedelta(seconds=options.initial_retry_seconds))
        try:
            if options.workflow is not None:
                await run_work(request.request_id, options)
            else:
                await run_handler(request.request_id, request.kind, options, attempts_done=attempts_done)
        except (ActivityError, ChildWorkflowError) as failure:
            if isinstance(failure.cause, CancelledError):
                if request.request_id not in self._cancelled:
                    raise  # the whole workflow is being cancelled: run() records CANCELLED for all
                await finish(FinishInput(request.request_id, CANCELLED))
            else:
                await finish(FinishInput(request.request_id, FAILED, error=describe_failure(failure)))
