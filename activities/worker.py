"""The worker role: registers its handler kinds, then runs ProcessRequestWorkflow and its activities."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from temporalio.client import Client
from temporalio.worker import Worker

from ackflow.db.queries import sql
from ackflow.handlers import HandlerRegistry
from ackflow.settings import Settings
from activities.request_activities import RequestActivities
from workflows import ProcessRequestWorkflow

log = logging.getLogger(__name__)


async def register_kinds(pool: asyncpg.Pool, registry: HandlerRegistry, task_queue: str) -> None:
    """Tell the gateways which kinds exist, and on which task queue they run."""
    await pool.execute(sql("register_handler_kinds"), registry.kinds(), task_queue)


def build_worker(client: Client, pool: asyncpg.Pool, registry: HandlerRegistry, settings: Settings) -> Worker:
    """A Temporal worker for ackflow's task queue, with the activities bound to `pool` and `registry`."""
    activities = RequestActivities(pool, registry)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[ProcessRequestWorkflow],
        activities=[activities.start_processing, activities.run_handler, activities.finish_request],
        # Bounded slots: oversized ones have been seen to collapse dev-server throughput.
        max_concurrent_activities=100,
        max_concurrent_workflow_tasks=20,
        max_concurrent_local_activities=50,
    )


async def run_worker(
    client: Client, pool: asyncpg.Pool, registry: HandlerRegistry, settings: Settings, stop: asyncio.Event
) -> None:
    """Register kinds and run the worker until `stop` is set."""
    await register_kinds(pool, registry, settings.task_queue)
    worker = build_worker(client, pool, registry, settings)
    log.info("worker on task queue %r handles kinds %s", settings.task_queue, ", ".join(registry.kinds()))
    async with worker:
        await stop.wait()
