"""The worker role: registers its handler kinds, then runs the workflows, their activities, and the
webhook dispatcher (first attempts of webhook deliveries; their retries are workflows here too)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
from temporalio.client import Client
from temporalio.worker import PollerBehaviorSimpleMaximum, Worker

from ackflow.db.queries import sql
from ackflow.handlers import HandlerRegistry
from ackflow.progress_reports import ProgressReports
from ackflow.settings import Settings
from activities.request_activities import RequestActivities
from activities.webhook_activities import WebhookActivities
from activities.work_activities import WorkActivities
from activities.work_progress import WorkProgress
from callbacks import (
    EndpointSlots,
    SplitTransport,
    TemporalRetryStarter,
    WebhookAttempts,
    WebhookDispatcher,
    WebhookSender,
)
from workflows import ProcessBatchWorkflow, ProcessRequestWorkflow, WebhookRetryWorkflow

log = logging.getLogger(__name__)


async def register_kinds(pool: asyncpg.Pool, registry: HandlerRegistry, task_queue: str) -> None:
    """Tell the gateways which kinds exist, on which task queue they run, and how to schedule them."""
    options = {handler.kind: dataclasses.asdict(handler.options) for handler in registry.handlers()}
    await pool.execute(sql("register_handler_kinds"), list(options), task_queue, options)


@contextlib.asynccontextmanager
async def webhook_attempts(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[WebhookAttempts]:
    """What sends webhooks: one HTTP transport (a connection for each attempt in flight), limits, health bookkeeping."""
    async with SplitTransport(settings.webhook_max_in_flight) as transport:
        sender = WebhookSender(transport, allow_private=settings.webhook_allow_private)
        yield WebhookAttempts(
            pool,
            sender,
            EndpointSlots(pool, lease_seconds=settings.webhook_lease_seconds),
            disable_after=timedelta(days=settings.webhook_disable_after_days),
            max_attempts=len(settings.webhook_retry_schedule) + 1,
        )


class RequestWorkers:
    """The worker on ackflow's task queue, and one on this process's own queue, where handlers a batch's
    local activity left running are awaited (await_requests); run together with `async with`."""

    def __init__(self, main: Worker, handover: Worker) -> None:
        self.main = main
        self.handover = handover

    async def __aenter__(self) -> RequestWorkers:
        await self.handover.__aenter__()
        try:
            await self.main.__aenter__()
        except BaseException:
            await self.handover.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.main.__aexit__(*exc)  # type: ignore[arg-type]
        finally:
            await self.handover.__aexit__(*exc)  # type: ignore[arg-type]


def build_worker(
    client: Client,
    pool: asyncpg.Pool,
    registry: HandlerRegistry,
    settings: Settings,
    *,
    attempts: WebhookAttempts | None = None,
) -> RequestWorkers:
    """Temporal workers for ackflow's task queue (with the webhook retry workflow if given `attempts`)."""
    progress = ProgressReports(
        pool, interval_seconds=settings.progress_interval_seconds, max_partial_bytes=settings.max_partial_bytes
    )
    requests = RequestActivities(pool, registry, progress=progress)
    work = WorkActivities(pool)
    workflows: list[type] = [ProcessBatchWorkflow, ProcessRequestWorkflow]  # the latter for runs of before batches
    activities: list[object] = [
        requests.run_batch,
        requests.run_handler,
        requests.finish_request,
        requests.finish_requests,
        requests.start_processing,
        work.start_work,
        work.record_work_result,
        work.mark_waiting,
    ]
    for kind in registry.workflow_kinds():  # the user's own workflows, and the activities they run
        assert kind.workflow is not None
        workflows.append(kind.workflow)
        activities.extend(a for a in kind.activities if a not in activities)
    if attempts is not None:
        workflows.append(WebhookRetryWorkflow)
        activities.append(WebhookActivities(attempts).attempt_webhook)
    main = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=workflows,
        activities=activities,  # type: ignore[arg-type]
        max_concurrent_activities=100,
        # A batch's local activity holds its workflow task (up to LOCAL_BUDGET_SECONDS): room for as
        # many batches at once as admission lets run, so slow handlers never keep new batches waiting.
        max_concurrent_workflow_tasks=100,
        max_concurrent_local_activities=100,
        # A batch is one workflow task on the normal queue (its local activity keeps it there), so the
        # sticky queue the SDK favours 4:1 by default rarely has work: half the pollers each way, and
        # ten rather than five, took POST -> DONE p99 at 116/s from 324 to 224-247 ms (bench stack).
        workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(maximum=10),
        nonsticky_to_sticky_poll_ratio=1.0,
        interceptors=[WorkProgress(progress)],  # progress() in a workflow kind's activities
    )
    handover = Worker(
        client,
        task_queue=requests.handover_queue,
        activities=[requests.await_requests],
        max_concurrent_activities=1000,  # each only waits for handlers already running here
    )
    return RequestWorkers(main, handover)


async def run_worker(
    client: Client, pool: asyncpg.Pool, registry: HandlerRegistry, settings: Settings, stop: asyncio.Event
) -> None:
    """Register kinds and run the Temporal worker and the webhook dispatcher until `stop` is set."""
    await register_kinds(pool, registry, settings.task_queue)
    async with webhook_attempts(pool, settings) as attempts:
        worker = build_worker(client, pool, registry, settings, attempts=attempts)
        dispatcher = WebhookDispatcher(
            pool,
            settings.database_url,
            attempts,
            TemporalRetryStarter(client, settings.task_queue, settings.webhook_retry_schedule),
            max_in_flight=settings.webhook_max_in_flight,
            lease_seconds=settings.webhook_lease_seconds,
        )
        log.info("worker on task queue %r handles kinds %s", settings.task_queue, ", ".join(registry.kinds()))
        async with worker:
            await dispatcher.run(stop)
