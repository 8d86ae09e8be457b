"""The bookkeeping activities of workflow kinds (ackflow/workflow_kinds.py): start, waits, result.

The user's workflow does the work; these record what ackflow owns around it, each one Postgres
statement, run as local activities of the batch workflow (start, result) or of the user's workflow
(waits).
"""

from __future__ import annotations

import uuid

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from ackflow.contracts import (
    DONE,
    PROCESSING,
    MarkWaitingInput,
    RecordWorkInput,
    StartWorkInput,
    StartWorkOutput,
)
from ackflow.db.queries import sql
from ackflow.db.transitions import start_request, transition
from ackflow.logs import bind_log_context
from activities.handler_runs import check_result


class WorkActivities:
    def __init__(self, pool: asyncpg.Pool, *, max_result_bytes: int = 1024 * 1024) -> None:
        self._pool = pool
        self._max_result_bytes = max_result_bytes

    @activity.defn(name="start_work")
    async def start_work(self, start: StartWorkInput) -> StartWorkOutput:
        """INIT -> PROCESSING, and the payload the workflow kind runs on. Run again after a crash it
        finds the request PROCESSING and goes on; an ended request (cancelled first) does not start."""
        bind_log_context(request_id=start.request_id)
        row = await start_request(self._pool, start.request_id)
        if row is not None:
            return StartWorkOutput(proceed=True, payload=row["payload"])
        current = await self._pool.fetchrow(sql("request_status_and_payload"), uuid.UUID(start.request_id))
        if current is None or current["status"] != PROCESSING:
            return StartWorkOutput(proceed=False)
        return StartWorkOutput(proceed=True, payload=current["payload"])

    @activity.defn(name="record_work_result")
    async def record_work_result(self, record: RecordWorkInput) -> None:
        """PROCESSING -> DONE with the run's result; a result too large or not JSON is a non-retryable error."""
        bind_log_context(request_id=record.request_id)
        check_result(record.result, self._max_result_bytes)
        try:
            await transition(self._pool, record.request_id, DONE, (PROCESSING,), result=record.result)
        except asyncpg.UntranslatableCharacterError:
            raise ApplicationError(
                "workflow result contains a NUL character (\\u0000), which Postgres cannot store",
                type="InvalidResult",
                non_retryable=True,
            ) from None

    @activity.defn(name="mark_waiting")
    async def mark_waiting(self, waiting: MarkWaitingInput) -> None:
        """The request waits for the input named (or, None, no longer waits)."""
        bind_log_context(request_id=waiting.request_id)
        await self._pool.execute(sql("mark_waiting"), uuid.UUID(waiting.request_id), waiting.input, waiting.wait)
