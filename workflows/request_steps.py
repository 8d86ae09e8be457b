"""The steps a request's workflow takes, shared by ProcessRequestWorkflow and ProcessBatchWorkflow.

Workflow code: deterministic, no I/O; every step is an activity.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

from ackflow.contracts import FinishInput, FinishManyInput, HandlerOptions, RunHandlerInput, RunHandlerOutput

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


def describe_failure(failure: ActivityError) -> dict[str, Any]:
    """The error recorded on a FAILED request: what kind of failure, and the handler's message."""
    cause = failure.cause
    if isinstance(cause, ApplicationError):
        return {"type": cause.type or "HandlerError", "message": cause.message}
    if isinstance(cause, TimeoutError):
        return {"type": "Timeout", "message": f"handler timed out ({cause.type.name if cause.type else 'timeout'})"}
    return {"type": type(cause).__name__ if cause else "ActivityError", "message": str(cause or failure)}
