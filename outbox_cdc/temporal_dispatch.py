"""Routes that act on Temporal: start a request's workflow, cancel it.

Both are idempotent, as at-least-once delivery requires: the workflow id is derived from the
request id, a duplicate start finds the existing (or finished) run and does nothing, and cancelling
a run that already ended does nothing.
"""

from __future__ import annotations

import logging

import msgspec
from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from ackflow.contracts import PROCESS_REQUEST_WORKFLOW, HandlerOptions, ProcessRequestInput, workflow_id_for
from ackflow.events import OutboxEvent
from ackflow.temporal import KIND_KEY, TENANT_KEY

log = logging.getLogger(__name__)


def process_request_input(event: OutboxEvent) -> ProcessRequestInput:
    """The workflow's input from a `request.accepted` row, with the handler options copied at accept."""
    options = event.payload.get("handler")  # {} or absent: the kind had not registered its options
    return ProcessRequestInput(
        str(event.request_id),
        str(event.tenant_id),
        str(event.payload["kind"]),
        msgspec.convert(options, HandlerOptions) if options else None,
    )


class TemporalDispatcher:
    """The relay's Temporal routes, bound to a client."""

    def __init__(self, client: Client, default_task_queue: str) -> None:
        self._client = client
        self._default_task_queue = default_task_queue

    async def start_request(self, event: OutboxEvent) -> None:
        """`request.accepted`: start ProcessRequestWorkflow once per request, ever."""
        kind = str(event.payload["kind"])
        try:
            await self._client.start_workflow(
                PROCESS_REQUEST_WORKFLOW,
                process_request_input(event),
                id=workflow_id_for(str(event.request_id)),
                task_queue=str(event.payload.get("task_queue") or self._default_task_queue),
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                search_attributes=TypedSearchAttributes(
                    [SearchAttributePair(TENANT_KEY, str(event.tenant_id)), SearchAttributePair(KIND_KEY, kind)]
                ),
            )
        except WorkflowAlreadyStartedError:
            pass  # started before (a re-sent row, or a relay killed after starting): nothing to do

    async def cancel_request(self, event: OutboxEvent) -> None:
        """`request.cancel_requested`: ask the request's workflow to cancel; a finished run is left alone."""
        handle = self._client.get_workflow_handle(workflow_id_for(str(event.request_id)))
        try:
            await handle.cancel()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            log.info("cancel of request %s: its workflow has already ended", event.request_id)
