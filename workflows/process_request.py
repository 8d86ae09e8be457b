"""ProcessRequestWorkflow: moves one request INIT -> PROCESSING -> DONE | FAILED | CANCELLED.

The whole happy path is one activity, as cheap as Temporal gets: the handler activity records
PROCESSING, runs the user's handler with its own timeout, retries and heartbeats, and records DONE
in the same attempt that produced the result (the result never travels through history). Its
scheduling options arrive in the input (copied from the kind's registration at accept). Only an
ending other than DONE takes one more step: a local activity recording FAILED or CANCELLED.
Workflows whose input has no options (accepted before kinds registered them) first ask a worker
for them with the `start_processing` local activity, as every run did before; replays of their
histories take that same branch.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutError

from ackflow.contracts import (
    CANCELLED,
    DONE,
    FAILED,
    PROCESS_REQUEST_WORKFLOW,
    FinishInput,
    HandlerOptions,
    ProcessRequestInput,
    RunHandlerInput,
    RunHandlerOutput,
    StartProcessingInput,
    StartProcessingOutput,
)

# Bookkeeping transactions are short; retry them for as long as Postgres takes to come back.
BOOKKEEPING_TIMEOUT = timedelta(seconds=30)
BOOKKEEPING_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))


# Unsandboxed: this workflow runs once per request, and the sandbox's per-run module set-up was
# measured at 10 of the worker's 27 ms of CPU per request (bench: end-to-end cpu_ms_per_request)
# on a machine where CPU is the limit. Its determinism is guarded instead by keeping it free of I/O,
# clocks and randomness (it only sequences activities) and by the replay tests of recorded
# histories (tests/workflows).
@workflow.defn(name=PROCESS_REQUEST_WORKFLOW, sandboxed=False)
class ProcessRequestWorkflow:
    """Runs one request's handler and records its outcome; cancellable while it runs."""

    @workflow.run
    async def run(self, request: ProcessRequestInput) -> str:
        handler = request.handler
        if handler is None:  # accepted before its kind registered options: a worker knows them
            started = await workflow.execute_local_activity(
                "start_processing",
                StartProcessingInput(request.request_id, request.kind),
                result_type=StartProcessingOutput,
                start_to_close_timeout=BOOKKEEPING_TIMEOUT,
                retry_policy=BOOKKEEPING_RETRY,
            )
            if not started.proceed:
                return "already finished"
            handler = started.handler
        try:
            outcome = await self._run_handler(request, handler)
        except (asyncio.CancelledError, CancelledError):
            await self._finish(FinishInput(request.request_id, CANCELLED))
            raise
        except ActivityError as failure:
            if isinstance(failure.cause, CancelledError):
                await self._finish(FinishInput(request.request_id, CANCELLED))
                raise
            await self._finish(FinishInput(request.request_id, FAILED, error=describe_failure(failure)))
            return FAILED
        return outcome.status or DONE

    async def _run_handler(self, request: ProcessRequestInput, options: HandlerOptions) -> RunHandlerOutput:
        output: RunHandlerOutput = await workflow.execute_activity(
            "run_handler",
            RunHandlerInput(request.request_id, request.kind),
            result_type=RunHandlerOutput,
            start_to_close_timeout=timedelta(seconds=options.start_to_close_seconds),
            heartbeat_timeout=(timedelta(seconds=options.heartbeat_seconds) if options.heartbeat_seconds else None),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=options.initial_retry_seconds),
                maximum_interval=timedelta(seconds=options.max_retry_seconds),
                maximum_attempts=options.max_attempts,
            ),
        )
        return output

    async def _finish(self, finish: FinishInput) -> None:
        await workflow.execute_local_activity(
            "finish_request",
            finish,
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
