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
from temporalio.worker import Worker

from ackflow.db.queries import sql
from ackflow.handlers import HandlerRegistry
from ackflow.settings import Settings
from activities.request_activities import RequestActivities
from activities.webhook_activities import WebhookActivities
from callbacks import (
    EndpointLimiter,
    SplitTransport,
    TemporalRetryStarter,
    WebhookAttempts,
    WebhookDispatcher,
    WebhookSender,
)
from workflows import ProcessRequestWorkflow, WebhookRetryWorkflow

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
            EndpointLimiter(pool),
            disable_after=timedelta(days=settings.webhook_disable_after_days),
            max_attempts=len(settings.webhook_retry_schedule) + 1,
        )


def build_worker(
    client: Client,
    pool: asyncpg.Pool,
    registry: HandlerRegistry,
    settings: Settings,
    *,
    attempts: WebhookAttempts | None = None,
) -> Worker:
    """A Temporal worker for ackflow's task queue (with the webhook retry workflow if given `attempts`)."""
    requests = RequestActivities(pool, registry)
    workflows: list[type] = [ProcessRequestWorkflow]
    activities: list[object] = [requests.start_processing, requests.run_handler, requests.finish_request]
    if attempts is not None:
        workflows.append(WebhookRetryWorkflow)
        activities.append(WebhookActivities(attempts).attempt_webhook)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=workflows,
        activities=activities,  # type: ignore[arg-type]
        # Bounded slots: oversized ones have been seen to collapse dev-server throughput.
        max_concurrent_activities=100,
        max_concurrent_workflow_tasks=20,
        max_concurrent_local_activities=50,
    )


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
