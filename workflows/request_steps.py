"""The steps a request's workflow takes, shared by ProcessRequestWorkflow and ProcessBatchWorkflow.

Workflow code: deterministic, no I/O; every step is an activity.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, TimeoutError

from ackflow.contracts import (
    FinishInput,
    FinishManyInput,
    HandlerOptions,
    RecordWorkInput,
    RunHandlerInput,
    RunHandlerOutput,
    StartWorkInput,
    StartWorkOutput,
    work_workflow_id,
)

# Bookkeeping transactions are short; retry them for as long as Postgres takes to come back.
BOOKKEEPING_TIMEOUT = timedelta(seconds=30)
BOOKKEEPING_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))


async def run_handler(
    request_id: str, kind: str, options: HandlerOptions, *, attempts_done: int = 0
) -> RunHandlerOutput:
    """The handler as its own activity, under the kind's timeout, heartbeat and retry policy.

    `attempts_done`: attempts already made elsewhere (a batch's first attempt); the policy goes on
    from there, with the backoff it would have had.
    """
    initial = options.initial_retry_seconds * 2**attempts_done
    output: RunHandlerOutput = await workflow.execute_activity(
        "run_handler",
        RunHandlerInput(request_id, kind),
        result_type=RunHandlerOutput,
        start_to_close_timeout=timedelta(seconds=options.start_to_close_seconds),
        heartbeat_timeout=(timedelta(seconds=options.heartbeat_seconds) if options.heartbeat_seconds else None),
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=min(initial, options.max_retry_seconds)),
            maximum_interval=timedelta(seconds=options.max_retry_seconds),
            maximum_attempts=max(1, options.max_attempts - attempts_done),  # 0 would mean unlimited
        ),
    )
    return output


async def run_work(request_id: str, options: HandlerOptions) -> None:
    """A workflow kind's run (ackflow/workflow_kinds.py): PROCESSING, the user's workflow as a child
    (one run per request: its id comes from the request's), DONE with what it returns. Its failure
    raises ChildWorkflowError; cancelling the caller cancels it and waits until it has stopped."""
    started: StartWorkOutput = await workflow.execute_local_activity(
        "start_work",
        StartWorkInput(request_id),
        result_type=StartWorkOutput,
        start_to_close_timeout=BOOKKEEPING_TIMEOUT,
        retry_policy=BOOKKEEPING_RETRY,
    )
    if not started.proceed:
        return  # it ended before it started (cancelled)
    assert options.workflow is not None
    result = await workflow.execute_child_workflow(
        options.workflow,
        started.payload,
        id=work_workflow_id(request_id),
        task_queue=workflow.info().task_queue,
        execution_timeout=timedelta(seconds=options.start_to_close_seconds),
    )
    await workflow.execute_local_activity(
        "record_work_result",
        RecordWorkInput(request_id, result),
        start_to_close_timeout=BOOKKEEPING_TIMEOUT,
        retry_policy=BOOKKEEPING_RETRY,
    )


async def finish(finish: FinishInput) -> None:
    """Record FAILED or CANCELLED (a request already ended stays as it is)."""
    await workflow.execute_local_activity(
        "finish_request", finish, start_to_close_timeout=BOOKKEEPING_TIMEOUT, retry_policy=BOOKKEEPING_RETRY
    )


async def finish_many(finishes: list[FinishInput]) -> None:
    """Record FAILED or CANCELLED for several requests in one transaction."""
    await workflow.execute_local_activity(
        "finish_requests",
        FinishManyInput(finishes),
        start_to_close_timeout=BOOKKEEPING_TIMEOUT,
        retry_policy=BOOKKEEPING_RETRY,
    )


def describe_failure(failure: ActivityError | ChildWorkflowError) -> dict[str, Any]:
    """The error recorded on a FAILED request: what kind of failure, and the handler's (or workflow's) message."""
    cause = failure.cause
    if isinstance(cause, ApplicationError):
        return {"type": cause.type or "HandlerError", "message": cause.message}
    if isinstance(cause, TimeoutError):
        return {"type": "Timeout", "message": f"handler timed out ({cause.type.name if cause.type else 'timeout'})"}
    return {"type": type(cause).__name__ if cause else "ActivityError", "message": str(cause or failure)}
