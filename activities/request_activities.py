"""The activities of ProcessBatchWorkflow and ProcessRequestWorkflow. Each status change is one
Postgres transaction (for a batch: one for all the requests that change together)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from ackflow.contracts import (
    CANCELLED,
    DONE,
    FAILED,
    INIT,
    PROCESSING,
    TERMINAL_STATUSES,
    AwaitRequestsInput,
    BatchRetry,
    FinishInput,
    FinishManyInput,
    HandlerOptions,
    ProcessRequestInput,
    RunBatchInput,
    RunBatchOutput,
    RunHandlerInput,
    RunHandlerOutput,
    StartProcessingInput,
    StartProcessingOutput,
)
from ackflow.db.queries import sql
from ackflow.db.transitions import start_many, start_request, transition, transition_many
from ackflow.handlers import HandlerRegistry, PermanentError
from ackflow.logs import bind_log_context, log_context
from ackflow.progress_reports import ProgressReports
from activities.handler_runs import check_result, handler_ran, outcome_of, run_once
from activities.handler_spans import handler_span, record_outcome
from activities.outcomes import OutcomeRecorder

log = logging.getLogger(__name__)

# How often a batch looks for requests of it that ended meanwhile (cancelled by the relay).
BATCH_WATCH_SECONDS = 1.0
# How long run_batch, a local activity holding its workflow's task, waits for its handlers before it
# hands those still running to await_requests: well inside the 10 s workflow task timeout, so the
# SDK never has to heartbeat the workflow task, and no batch holds a workflow task slot for long.
LOCAL_BUDGET_SECONDS = 4.0
HANDOVER_KEEP_SECONDS = 600.0


class RequestActivities:
    """Activities bound to a Postgres pool and the worker's handler registry."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        registry: HandlerRegistry,
        *,
        max_result_bytes: int = 1024 * 1024,
        progress: ProgressReports | None = None,
    ):
        self._pool = pool
        self._progress = progress or ProgressReports(pool)
        self._registry = registry
        self._max_result_bytes = max_result_bytes
        self._outcomes = OutcomeRecorder(pool)
        # Handlers run_batch left running, until await_requests collects them; on this worker's own queue.
        self._handed_over: dict[str, asyncio.Task[BatchRetry | None]] = {}
        self.handover_queue = f"ackflow-handover-{uuid.uuid4().hex}"

    @activity.defn(name="start_processing")
    async def start_processing(self, start: StartProcessingInput) -> StartProcessingOutput:
        """INIT -> PROCESSING. Says not to proceed if the request already ended (cancelled before start)."""
        bind_log_context(request_id=start.request_id)
        if await start_request(self._pool, start.request_id) is None:
            status = await self._status(start.request_id)
            if status in TERMINAL_STATUSES or status is None:
                return StartProcessingOutput(proceed=False)
        return StartProcessingOutput(proceed=True, handler=self._options_for(start.kind))

    @activity.defn(name="run_handler")
    async def run_handler(self, run: RunHandlerInput) -> RunHandlerOutput:
        """INIT -> PROCESSING, run the kind's handler on the payload, record DONE with its result.

        A request that already ended (cancelled before its handler started) is left alone.
        """
        bind_log_context(request_id=run.request_id)
        handler = self._registry.get(run.kind)
        if handler is None or handler.function is None:
            raise ApplicationError(
                f"no handler function for kind {run.kind!r} on this worker", type="UnknownKind", non_retryable=True
            )
        row = await start_request(self._pool, run.request_id)
        if row is None:  # a retry (PROCESSING already), or the request ended meanwhile (or expired)
            row = await self._pool.fetchrow(sql("request_status_and_payload"), uuid.UUID(run.request_id))
            if row is None or row["status"] != PROCESSING:
                return RunHandlerOutput(status=row and row["status"])  # ended: nothing to do
        with handler_span(run.request_id, run.kind, row["trace_context"], tenant_id=row["tenant_id"]):
            return await self._run_and_record(run, handler.function, row["payload"])

    async def _run_and_record(self, run: RunHandlerInput, function: Any, payload: Any) -> RunHandlerOutput:
        """run_handler's attempt, in its span (an exception it raises marks the span an error) and timed."""
        started = time.perf_counter()
        try:
            async with self._progress.reporting(run.request_id):
                result = await function(payload)
        except PermanentError as exc:
            handler_ran(run.kind, "failed", started)
            raise ApplicationError(str(exc), type="PermanentError", non_retryable=True) from None
        except asyncio.CancelledError:
            handler_ran(run.kind, "cancelled", started)
            raise
        except Exception:  # Temporal retries the activity by the kind's policy
            handler_ran(run.kind, "retry", started)
            raise
        handler_ran(run.kind, "done", started)
        self._check_result(result)
        try:
            recorded = await transition(self._pool, run.request_id, DONE, (PROCESSING,), result=result)
        except asyncpg.UntranslatableCharacterError:
            raise ApplicationError(
                "handler result contains a NUL character (\\u0000), which Postgres cannot store",
                type="InvalidResult",
                non_retryable=True,
            ) from None
        if recorded is None:
            log.info("request %s ended before its handler finished; result dropped", run.request_id)
        record_outcome(DONE if recorded is not None else "dropped")
        return RunHandlerOutput(status=DONE if recorded is not None else await self._status(run.request_id))

    @activity.defn(name="run_batch")
    async def run_batch(self, batch: RunBatchInput) -> RunBatchOutput:
        """INIT -> PROCESSING for the whole batch in one statement, then every handler at once, each
        under its kind's timeout, each outcome recorded as soon as it ends. A local activity: it
        waits for its handlers at most LOCAL_BUDGET_SECONDS, then hands those still running over to
        this worker's own task queue (`await_requests`), so no batch holds a workflow task for long.
        Run again after its worker died, it runs again the requests still PROCESSING; those that
        ended meanwhile are left alone.
        """
        members = {request.request_id: request for request in batch.requests}
        started = await start_many(self._pool, members)
        rows = {str(row["id"]): row for row in started}
        if len(rows) < len(members):  # the rest: PROCESSING already (a retry of this activity), or ended
            rest = [uuid.UUID(i) for i in members if i not in rows]
            rows.update({str(row["id"]): row for row in await self._pool.fetch(sql("requests_in_progress"), rest)})
        attempts = {
            i: asyncio.create_task(self._attempt_in_context(members[i], row["payload"], row["trace_context"]))
            for i, row in rows.items()
        }
        try:
            await self._watch(attempts, budget=LOCAL_BUDGET_SECONDS)
            retries = _retries([task for task in attempts.values() if task.done()])  # raises a task's error
        except BaseException:
            for task in attempts.values():
                task.cancel()  # cancelled (its workflow was), or Postgres failed it: no handler outlives it
            raise
        running = [i for i, task in attempts.items() if not task.done()]
        for i in running:
            self._hand_over(i, attempts[i])
        return RunBatchOutput(retries=retries, running=running, handover_queue=self.handover_queue if running else None)

    def _hand_over(self, request_id: str, task: asyncio.Task[BatchRetry | None]) -> None:
        """Keep the running handler for await_requests; forgotten a while after it ends if none comes
        (its workflow ran the request alone instead: that run finds it ended and does nothing)."""
        self._handed_over[request_id] = task
        loop = asyncio.get_running_loop()

        def forget_later(_: object) -> None:
            loop.call_later(HANDOVER_KEEP_SECONDS, self._forget, request_id, task)

        task.add_done_callback(forget_later)

    def _forget(self, request_id: str, task: asyncio.Task[BatchRetry | None]) -> None:
        if self._handed_over.get(request_id) is task:
            del self._handed_over[request_id]

    @activity.defn(name="await_requests")
    async def await_requests(self, wait: AwaitRequestsInput) -> RunBatchOutput:
        """On this worker's own task queue: wait for handlers run_batch left running here, heartbeating.
        A request this process does not hold (it restarted) is `lost`: its workflow runs it alone."""
        attempts = {i: task for i in wait.request_ids if (task := self._handed_over.get(i)) is not None}
        lost = [i for i in wait.request_ids if i not in attempts]
        try:
            await self._watch(attempts, heartbeat=True)
            retries = _retries(list(attempts.values()))
        finally:
            for i, task in attempts.items():
                task.cancel()  # only those still running: this activity was cancelled
                self._handed_over.pop(i, None)
        return RunBatchOutput(retries=retries, lost=lost)

    async def _watch(
        self,
        attempts: dict[str, asyncio.Task[BatchRetry | None]],
        *,
        budget: float | None = None,
        heartbeat: bool = False,
    ) -> None:
        """Wait for the handlers (for `budget` seconds at most); each second, stop those whose request
        ended meanwhile (cancelled), and heartbeat if asked."""
        deadline = None if budget is None else asyncio.get_running_loop().time() + budget
        while running := [task for task in attempts.values() if not task.done()]:
            left = BATCH_WATCH_SECONDS if deadline is None else deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await asyncio.wait(running, timeout=min(BATCH_WATCH_SECONDS, left))
            still = [uuid.UUID(i) for i, task in attempts.items() if not task.done()]
            if still:
                if heartbeat:
                    activity.heartbeat()
                for row in await self._pool.fetch(sql("requests_ended"), still):
                    attempts[str(row["id"])].cancel()

    async def _attempt_in_context(
        self, request: ProcessRequestInput, payload: Any, trace_context: str | None
    ) -> BatchRetry | None:
        """`_attempt` in its handler span, its log lines naming the request (each attempt is its own task)."""
        with (
            log_context(request_id=request.request_id, tenant=request.tenant_id, kind=request.kind),
            handler_span(request.request_id, request.kind, trace_context, tenant_id=request.tenant_id),
        ):
            return await self._attempt(request, payload)

    async def _attempt(self, request: ProcessRequestInput, payload: Any) -> BatchRetry | None:
        """One request's attempt inside a batch: its outcome recorded, or a retry to hand back."""
        handler = self._registry.get(request.kind)
        options = request.handler or self._options_for(request.kind)
        error: dict[str, Any] | None
        if handler is None or handler.function is None:  # (a workflow kind never runs in a batch's activity)
            error = {"type": "UnknownKind", "message": f"no handler function for kind {request.kind!r} on this worker"}
            retryable = False
        else:
            started = time.perf_counter()
            try:
                async with self._progress.reporting(request.request_id):
                    result, error, retryable = await run_once(handler, options, payload, self._check_result)
            except asyncio.CancelledError:  # its request ended meanwhile, or its activity was cancelled
                handler_ran(request.kind, "cancelled", started)
                raise
            handler_ran(request.kind, outcome_of(error, retryable, options), started)
            if error is None:
                recorded = await self._outcomes.record(request.request_id, DONE, result=result)
                if not recorded:
                    log.info("request %s ended before its handler finished; result dropped", request.request_id)
                record_outcome(DONE if recorded else "dropped")
                return None
        if retryable and options.max_attempts > 1:
            record_outcome("retry", error)
            return BatchRetry(request.request_id, error)
        await self._outcomes.record(request.request_id, FAILED, error=error)
        record_outcome(FAILED, error)
        return None

    @activity.defn(name="finish_requests")
    async def finish_requests(self, finishes: FinishManyInput) -> None:
        """Several requests (INIT or PROCESSING) to FAILED or CANCELLED in one statement; ended ones stay."""
        if any(f.status not in (FAILED, CANCELLED) for f in finishes.finishes):
            raise ApplicationError("finish_requests records only FAILED or CANCELLED", non_retryable=True)
        changes = [{"id": f.request_id, "status": f.status, "error": f.error} for f in finishes.finishes]
        await transition_many(self._pool, changes, (INIT, PROCESSING))

    @activity.defn(name="finish_request")
    async def finish_request(self, finish: FinishInput) -> None:
        """PROCESSING (or INIT) -> FAILED or CANCELLED. A request already ended stays as it is."""
        if finish.status not in (FAILED, CANCELLED):
            raise ApplicationError(f"finish_request cannot record {finish.status}", non_retryable=True)
        bind_log_context(request_id=finish.request_id)
        await transition(self._pool, finish.request_id, finish.status, (INIT, PROCESSING), error=finish.error)

    def _options_for(self, kind: str) -> HandlerOptions:
        handler = self._registry.get(kind)
        return handler.options if handler else HandlerOptions()

    def _check_result(self, result: Any) -> None:
        check_result(result, self._max_result_bytes)

    async def _status(self, request_id: str) -> str | None:
        row = await self._pool.fetchrow(sql("get_request_status"), uuid.UUID(request_id))
        return None if row is None else str(row["status"])


def _retries(finished: list[asyncio.Task[BatchRetry | None]]) -> list[BatchRetry]:
    """The retries finished attempts hand back (a handler stopped because its request ended hands back none)."""
    outcomes = [task.result() for task in finished if not task.cancelled()]
    return [retry for retry in outcomes if retry is not None]
