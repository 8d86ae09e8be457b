"""Routes that act on Temporal: start a batch's workflow (or a request's, of before batches), cancel a request.

All are idempotent, as at-least-once delivery requires: a batch's workflow id is derived from its
members when the claim forms it (a request's from its id), so a duplicate start finds the existing
(or finished) run and does nothing; cancelling a request whose run already ended does nothing.

A start Temporal refuses as malformed (INVALID_ARGUMENT: e.g. a search attribute the namespace
does not know) can never succeed: it raises PermanentDispatchError, so the relay dead-letters the
row and the request ends FAILED. A start onto a task queue that no worker polls is held back (the
row is postponed with backoff, and dead-lettered once it has failed for too long) rather than left
waiting inside Temporal, where nothing would ever tell the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import msgspec
from opentelemetry.trace import StatusCode
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from ackflow.contracts import (
    CANCEL_REQUEST_SIGNAL,
    INPUT_SIGNAL,
    PROCESS_BATCH_WORKFLOW,
    PROCESS_REQUEST_WORKFLOW,
    HandlerOptions,
    ProcessBatchInput,
    ProcessRequestInput,
    workflow_id_for,
)
from ackflow.errors import PermanentDispatchError
from ackflow.events import OutboxEvent
from ackflow.temporal import KIND_KEY, KINDS_KEY, REQUEST_IDS_KEY, TENANT_KEY, TENANTS_KEY
from ackflow.tracing import KIND, REQUEST_ID, TENANT, links_to, request_span, start_request_span, tracer

log = logging.getLogger(__name__)

# Refusals that no retry can change: the start request itself is wrong.
PERMANENT_STATUSES = frozenset(
    {RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.OUT_OF_RANGE, RPCStatusCode.UNIMPLEMENTED}
)
POLLERS_CACHE_SECONDS = 5.0
NO_POLLERS_CACHE_SECONDS = 1.0
DISPATCH_SPAN = "ackflow.relay.dispatch"
DISPATCH_BATCH_SPAN = "ackflow.relay.dispatch_batch"


class NoWorkerPolls(Exception):
    """No worker polls the task queue a request would start on: try again later."""


class _PollerCheck:
    """One question to Temporal about a task queue's pollers, shared by every start that waits on it."""

    def __init__(self, answer: asyncio.Future[bool]) -> None:
        self.answer = answer
        self.asked_at = time.monotonic()

    def expired(self) -> bool:
        if not self.answer.done():
            return False
        polled = not self.answer.cancelled() and self.answer.exception() is None and self.answer.result()
        return time.monotonic() - self.asked_at >= (POLLERS_CACHE_SECONDS if polled else NO_POLLERS_CACHE_SECONDS)


def process_request_input(event: OutboxEvent) -> ProcessRequestInput:
    """The workflow's input from a `request.accepted` row, with the handler options copied at accept."""
    return _request_input(
        {
            "request_id": event.request_id,
            "tenant_id": event.tenant_id,
            "kind": event.payload.get("kind"),
            "handler": event.payload.get("handler"),
        }
    )


def process_batch_input(event: OutboxEvent) -> ProcessBatchInput:
    """The batch workflow's input from a `request.batch` row: its members, in the order they were accepted."""
    members = event.payload.get("requests")
    if not isinstance(members, list) or not members:
        raise PermanentDispatchError("the outbox row is malformed: a batch without requests")
    return ProcessBatchInput([_request_input(member) for member in members])


def _request_input(member: dict[str, object]) -> ProcessRequestInput:
    options = member.get("handler")  # {} or absent: the kind had not registered its options
    try:
        handler = msgspec.convert(options, HandlerOptions) if options else None
        kind = member["kind"]
        if not isinstance(kind, str):
            raise KeyError("kind")
        return ProcessRequestInput(str(member["request_id"]), str(member["tenant_id"]), kind, handler)
    except (KeyError, msgspec.ValidationError) as exc:
        raise PermanentDispatchError(f"the outbox row is malformed: {exc!r}") from None


@contextlib.contextmanager
def _dispatch_spans(members: list[dict[str, Any]]) -> Iterator[None]:
    """The spans a batch's start runs under (ackflow/tracing.py): for a batch of one, the request's
    `ackflow.relay.dispatch` span, a child of its stored trace context, so that the workflow and its
    activities are in the request's trace. For a batch of several, which cannot be in every member's
    trace, one `ackflow.relay.dispatch_batch` span linked to each member's trace, and a dispatch span
    in each member's trace linked to it."""
    if len(members) == 1:
        with request_span(DISPATCH_SPAN, members[0].get("trace_context"), attributes=_attributes(members[0])):
            yield
        return
    contexts = [member.get("trace_context") for member in members]
    with tracer().start_as_current_span(DISPATCH_BATCH_SPAN, links=links_to(contexts)):
        spans = [start_request_span(DISPATCH_SPAN, m.get("trace_context"), attributes=_attributes(m)) for m in members]
        try:
            yield
        except Exception as exc:
            for span in spans:
                span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            for span in spans:
                span.end()


def _attributes(member: dict[str, Any]) -> dict[str, str]:
    return {REQUEST_ID: str(member["request_id"]), TENANT: str(member["tenant_id"]), KIND: str(member["kind"])}


class TemporalDispatcher:
    """The relay's Temporal routes, bound to a client."""

    def __init__(self, client: Client, default_task_queue: str) -> None:
        self._client = client
        self._default_task_queue = default_task_queue
        self._pollers: dict[str, _PollerCheck] = {}  # task queue -> whether a worker polls it, lately

    async def start_batch(self, event: OutboxEvent) -> None:
        """`request.batch`: start ProcessBatchWorkflow once per batch, ever, under the id the claim derived."""
        batch = process_batch_input(event)
        workflow_id = event.payload.get("workflow_id")
        if not isinstance(workflow_id, str) or not workflow_id:
            raise PermanentDispatchError("the outbox row is malformed: a batch without its workflow id")
        tenants = sorted({request.tenant_id for request in batch.requests})
        kinds = sorted({request.kind for request in batch.requests})
        attributes: list[SearchAttributePair[Any]] = [
            SearchAttributePair(REQUEST_IDS_KEY, [request.request_id for request in batch.requests]),
            SearchAttributePair(TENANTS_KEY, tenants),
            SearchAttributePair(KINDS_KEY, kinds),
        ]
        if len(tenants) == 1:  # as a workflow of one request carried them: saved queries keep working
            attributes.append(SearchAttributePair(TENANT_KEY, tenants[0]))
        if len(kinds) == 1:
            attributes.append(SearchAttributePair(KIND_KEY, kinds[0]))
        with _dispatch_spans(event.payload["requests"]):
            await self._start(PROCESS_BATCH_WORKFLOW, batch, workflow_id, event, attributes)

    async def start_request(self, event: OutboxEvent) -> None:
        """`request.accepted` admitted before batches (a relay died holding it): start ProcessRequestWorkflow
        once per request, ever, as that relay would have."""
        start = process_request_input(event)
        attributes: list[SearchAttributePair[Any]] = [
            SearchAttributePair(TENANT_KEY, start.tenant_id),
            SearchAttributePair(KIND_KEY, start.kind),
        ]
        await self._start(PROCESS_REQUEST_WORKFLOW, start, workflow_id_for(str(event.request_id)), event, attributes)

    async def _start(
        self,
        workflow: str,
        arg: object,
        workflow_id: str,
        event: OutboxEvent,
        attributes: list[SearchAttributePair[Any]],
    ) -> None:
        task_queue = str(event.payload.get("task_queue") or self._default_task_queue)
        try:
            await self._require_worker(task_queue)
            await self._client.start_workflow(
                workflow,
                arg,
                id=workflow_id,
                task_queue=task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                search_attributes=TypedSearchAttributes(attributes),
            )
        except WorkflowAlreadyStartedError:
            pass  # started before (a re-sent row, or a relay killed after starting): nothing to do
        except RPCError as exc:
            if exc.status in PERMANENT_STATUSES:
                raise PermanentDispatchError(f"Temporal refused the start ({exc.status.name}): {exc.message}") from exc
            raise

    async def _require_worker(self, task_queue: str) -> None:
        """Raise NoWorkerPolls unless a worker polls `task_queue`. Temporal is asked at most once per
        queue every few seconds (once a second while none polls), however many starts are waiting."""
        checked = self._pollers.get(task_queue)
        if checked is None or checked.expired():
            checked = _PollerCheck(asyncio.ensure_future(self._has_pollers(task_queue)))
            self._pollers[task_queue] = checked
        try:
            polled = await asyncio.shield(checked.answer)
        except Exception:
            self._pollers.pop(task_queue, None)  # ask again next time
            raise
        if not polled:
            raise NoWorkerPolls(f"no worker polls task queue {task_queue!r}")

    async def _has_pollers(self, task_queue: str) -> bool:
        described = await self._client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=self._client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        return bool(described.pollers)

    async def cancel_request(self, event: OutboxEvent) -> None:
        """Tell the request's batch to stop its handler (a request of before batches: cancel its workflow);
        a finished run is left alone. CancelRequestRoute records CANCELLED first."""
        workflow_id = event.payload.get("workflow_id")
        try:
            if isinstance(workflow_id, str) and workflow_id:
                await self._client.get_workflow_handle(workflow_id).signal(CANCEL_REQUEST_SIGNAL, str(event.request_id))
            else:
                await self._client.get_workflow_handle(workflow_id_for(str(event.request_id))).cancel()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            log.info("cancel of request %s: its workflow has already ended", event.request_id)

    async def deliver_input(self, event: OutboxEvent) -> None:
        """Signal an input the gateway accepted to the workflow kind's run waiting for it (its `seq`
        lets the run drop a re-sent one); a run that has ended meanwhile is left alone."""
        payload = event.payload
        message = {"name": payload["name"], "value": payload.get("value"), "seq": payload["seq"]}
        try:
            await self._client.get_workflow_handle(payload["workflow_id"]).signal(INPUT_SIGNAL, message)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            log.info("input %r of request %s: its workflow has already ended", payload["name"], event.request_id)
