"""ProcessRequestWorkflow: moves one request INIT -> PROCESSING -> DONE | FAILED | CANCELLED.

Relays start ProcessBatchWorkflow now (workflows/process_batch.py); this one stays registered so
that workflows started by relays of before batches still complete, and its histories replay.

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

from temporalio import workflow
from temporalio.exceptions import ActivityError, CancelledError

from ackflow.contracts import (
    CANCELLED,
    DONE,
    FAILED,
    PROCESS_REQUEST_WORKFLOW,
    FinishInput,
    ProcessRequestInput,
    StartProcessingInput,
    StartProcessingOutput,
)
from workflows.request_steps import BOOKKEEPING_RETRY, BOOKKEEPING_TIMEOUT, describe_failure, finish, run_handler


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
            outcome = await run_handler(request.request_id, request.kind, handler)
        except (asyncio.CancelledError, CancelledError):
            await finish(FinishInput(request.request_id, CANCELLED))
            raise
        except ActivityError as failure:
            if isinstance(failure.cause, CancelledError):
                await finish(FinishInput(request.request_id, CANCELLED))
                raise
            await finish(FinishInput(request.request_id, FAILED, error=describe_failure(failure)))
            return FAILED
        return outcome.status or DONE
