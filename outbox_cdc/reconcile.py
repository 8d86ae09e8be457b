"""Reconciling requests in flight with their workflows: nothing waits on a workflow that is gone.

A request counts against admission from the claim that admitted it until it completes. If its
workflow ended without recording an outcome (terminated or timed out by an operator in the Temporal
UI, say) or vanished (a Temporal cluster that lost its data), the request would hold its place and
its client would wait for ever. Every `interval_seconds`, the reconciler asks Temporal about the
requests in flight longest unchecked (each by its batch's workflow): one whose workflow ended
ends too (CANCELLED if the workflow was cancelled, else FAILED with a `WorkflowEnded` error); one
whose workflow does not exist is accepted into the outbox again, so the relay starts it anew. All
of it is guarded by the request's status and admission, so several relays can reconcile at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import asyncpg
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from ackflow.contracts import CANCELLED, FAILED, INIT, PROCESSING
from ackflow.db.pool import POSTGRES_ERRORS
from ackflow.db.queries import sql
from ackflow.db.transitions import transition

log = logging.getLogger(__name__)

BATCH = 100
TROUBLE: tuple[type[Exception], ...] = (*POSTGRES_ERRORS, RPCError)  # Postgres or Temporal away: try later
GRACE_SECONDS = 120.0  # longer than a relay's lease: a request admitted this recently may not have started yet


class Reconciler:
    """Checks requests in flight against Temporal, a batch every `interval_seconds`."""

    def __init__(
        self, pool: asyncpg.Pool, client: Client, *, interval_seconds: float, grace_seconds: float = GRACE_SECONDS
    ) -> None:
        self._pool = pool
        self._client = client
        self._interval = interval_seconds
        self._grace = grace_seconds

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.reconcile_once()
            except TROUBLE as exc:
                log.warning("reconciling requests in flight failed, retrying later: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def reconcile_once(self) -> int:
        """Check one batch; return how many requests it ended or dispatched again."""
        rows = await self._pool.fetch(sql("requests_to_reconcile"), self._grace, BATCH)
        checked: list[uuid.UUID] = []
        repaired = 0
        try:
            for row in rows:
                repaired += await self._reconcile(row["id"], row["workflow_id"])
                checked.append(row["id"])
        finally:  # Temporal failing mid-batch: the next pass starts with the ones not checked
            if checked:
                await self._pool.execute(sql("mark_reconciled"), checked)
        return repaired

    async def _reconcile(self, request_id: uuid.UUID, workflow_id: str) -> int:
        try:
            described = await self._client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            # A namespace that does not exist (mistyped, or re-created) is NOT_FOUND too, and must not
            # send every request in flight again: this raises if it is the namespace that is missing.
            await self._client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=self._client.namespace)
            )
            dispatched = await self._pool.fetchval(sql("dispatch_again"), request_id)
            if dispatched is not None:
                log.warning("request %s: its workflow no longer exists; dispatched again", request_id)
            return int(dispatched is not None)
        status = described.status
        if status is None or status == WorkflowExecutionStatus.RUNNING:
            return 0
        name = status.name
        if status == WorkflowExecutionStatus.CANCELED:
            moved = await transition(self._pool, request_id, CANCELLED, (INIT, PROCESSING))
        else:
            error = {"type": "WorkflowEnded", "message": f"its workflow ended ({name}) without recording an outcome"}
            moved = await transition(self._pool, request_id, FAILED, (INIT, PROCESSING), error=error)
        if moved is not None:
            log.warning(
                "request %s: its workflow ended (%s) without an outcome; recorded %s", request_id, name, moved["status"]
            )
        return int(moved is not None)
