"""The activities of ProcessRequestWorkflow. Each status change is one Postgres transaction."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
import msgspec
from temporalio import activity
from temporalio.exceptions import ApplicationError

from ackflow.contracts import (
    CANCELLED,
    DONE,
    FAILED,
    INIT,
    PROCESSING,
    TERMINAL_STATUSES,
    FinishInput,
    HandlerOptions,
    RunHandlerInput,
    RunHandlerOutput,
    StartProcessingInput,
    StartProcessingOutput,
)
from ackflow.db.queries import sql
from ackflow.db.transitions import transition
from ackflow.handlers import HandlerRegistry, PermanentError

log = logging.getLogger(__name__)


class RequestActivities:
    """Activities bound to a Postgres pool and the worker's handler registry."""

    def __init__(self, pool: asyncpg.Pool, registry: HandlerRegistry, *, max_result_bytes: int = 1024 * 1024):
        self._pool = pool
        self._registry = registry
        self._max_result_bytes = max_result_bytes

    @activity.defn(name="start_processing")
    async def start_processing(self, start: StartProcessingInput) -> StartProcessingOutput:
        """INIT -> PROCESSING. Says not to proceed if the request already ended (cancelled before start)."""
        if await transition(self._pool, start.request_id, PROCESSING, (INIT,)) is None:
            status = await self._status(start.request_id)
            if status in TERMINAL_STATUSES or status is None:
                return StartProcessingOutput(proceed=False)
        return StartProcessingOutput(proceed=True, handler=self._options_for(start.kind))

    @activity.defn(name="run_handler")
    async def run_handler(self, run: RunHandlerInput) -> RunHandlerOutput:
        """INIT -> PROCESSING, run the kind's handler on the payload, record DONE with its result.

        A request that already ended (cancelled before its handler started) is left alone.
        """
        handler = self._registry.get(run.kind)
        if handler is None:
            raise ApplicationError(
                f"no handler for kind {run.kind!r} on this worker", type="UnknownKind", non_retryable=True
            )
        row = await transition(self._pool, run.request_id, PROCESSING, (INIT,))
        if row is None:  # a retry (PROCESSING already), or the request ended meanwhile
            row = await self._pool.fetchrow(
                "SELECT status, payload FROM requests WHERE id = $1", uuid.UUID(run.request_id)
            )
            if row is None or row["status"] != PROCESSING:
                return RunHandlerOutput(result=None, status=row and row["status"])  # ended: nothing to do
        try:
            result = await handler.function(row["payload"])
        except PermanentError as exc:
            raise ApplicationError(str(exc), type="PermanentError", non_retryable=True) from None
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
        return RunHandlerOutput(
            result=None, status=DONE if recorded is not None else await self._status(run.request_id)
        )

    @activity.defn(name="finish_request")
    async def finish_request(self, finish: FinishInput) -> None:
        """PROCESSING (or INIT) -> FAILED or CANCELLED. A request already ended stays as it is."""
        if finish.status not in (FAILED, CANCELLED):
            raise ApplicationError(f"finish_request cannot record {finish.status}", non_retryable=True)
        await transition(
            self._pool, finish.request_id, finish.status, (INIT, PROCESSING), result=finish.result, error=finish.error
        )

    def _options_for(self, kind: str) -> HandlerOptions:
        handler = self._registry.get(kind)
        return handler.options if handler else HandlerOptions()

    def _check_result(self, result: Any) -> None:
        try:
            encoded = msgspec.json.encode(result)
        except (TypeError, msgspec.EncodeError) as exc:
            raise ApplicationError(
                f"handler result is not JSON-serialisable: {exc}", type="InvalidResult", non_retryable=True
            ) from None
        if len(encoded) > self._max_result_bytes:
            raise ApplicationError(
                f"handler result is {len(encoded)} bytes, over the {self._max_result_bytes}-byte limit",
                type="ResultTooLarge",
                non_retryable=True,
            )

    async def _status(self, request_id: str) -> str | None:
        row = await self._pool.fetchrow(sql("get_request_status"), uuid.UUID(request_id))
        return None if row is None else str(row["status"])
