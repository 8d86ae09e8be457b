"""The long-running roles (gateway, relay, worker) as coroutines that run until `stop` is set.

The CLI runs each alone in production and all together under `ackflow dev`. This module is the
composition root: the one module of the core `ackflow` that imports the service packages, each
through its `__init__`, to wire them into roles. The rules the packages follow (README
"Development", checked by `lint-imports`): gateway, outbox_cdc, callbacks and workflows import only
the core, never each other; activities, whose worker runs the workflows and the webhook dispatcher,
imports workflows and callbacks too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import asyncpg
import uvicorn
from redis.asyncio import Redis

from ackflow.contracts import (
    EVENT_TOPICS,
    TOPIC_ACCEPTED,
    TOPIC_BATCH,
    TOPIC_CANCEL_REQUESTED,
    TOPIC_INPUT,
    TOPIC_SUPERSEDE,
)
from ackflow.events import Route
from ackflow.handlers import HandlerRegistry
from ackflow.metrics import REFRESH, Refresher, dependency_check
from ackflow.metrics.stages import stage_health_refresher
from ackflow.settings import Settings

if TYPE_CHECKING:  # the gateway's process never loads the Temporal client
    from temporalio.client import Client

log = logging.getLogger(__name__)


class SignalFreeServer(uvicorn.Server):
    """uvicorn without its own signal handling: the CLI owns signals and stops every role together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_gateway(
    settings: Settings,
    stop: asyncio.Event,
    *,
    pool: asyncpg.Pool | None = None,
    redis: Redis | None = None,
    tune_gc: bool = False,
) -> None:
    """Serve HTTP on settings.http_host:http_port until `stop` is set (see create_app for `tune_gc`)."""
    from gateway import create_app

    config = uvicorn.Config(
        create_app(settings, pool=pool, redis=redis, tune_gc=tune_gc),
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        log_config=None,  # uvicorn's records go to the root handler, in ACKFLOW_LOG_FORMAT (ackflow.logs)
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
        # Clients have nothing to say on a WebSocket: a message over the cap closes it (1009), and no
        # compression, whose inflate buffers a client could make the gateway hold.
        ws_max_size=settings.ws_max_message_bytes,
        ws_per_message_deflate=False,
    )
    server = SignalFreeServer(config)
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await serving
    if not server.started and not stop.is_set():
        raise RuntimeError("the gateway could not start; see the log above")


def relay_routes(client: Client, redis: Redis, settings: Settings, pool: asyncpg.Pool) -> dict[str, Route]:
    """Topic -> route: Temporal for workflow starts and cancels, callbacks for status events."""
    from callbacks import StatusEventRoute, StatusPublisher, WebhookFanout
    from outbox_cdc import CancelRequestRoute, SupersedeRoute, TemporalDispatcher

    dispatcher = TemporalDispatcher(client, settings.task_queue)
    on_status = StatusEventRoute(WebhookFanout(pool), StatusPublisher(redis))
    routes: dict[str, Route] = {
        TOPIC_BATCH: dispatcher.start_batch,
        TOPIC_ACCEPTED: dispatcher.start_request,
        TOPIC_CANCEL_REQUESTED: CancelRequestRoute(pool, dispatcher),
        TOPIC_INPUT: dispatcher.deliver_input,
        TOPIC_SUPERSEDE: SupersedeRoute(pool),
    }
    routes.update({topic: on_status for topic in EVENT_TOPICS})
    return routes


async def run_relay(
    settings: Settings, stop: asyncio.Event, *, pool: asyncpg.Pool, client: Client, redis: Redis
) -> None:
    """Relay the outbox until `stop` is set; in the background, reconcile requests in flight with their
    workflows, cancel requests that expired before they started, and prune finished work (ackflow.db.retention)."""
    from ackflow.db.retention import Pruner
    from ackflow.temporal import traced
    from outbox_cdc import DeadLetterLimits, ExpirySweep, OutboxRelay, Reconciler, WorkflowAdmission

    client = traced(client)
    relay = OutboxRelay(
        pool,
        settings.database_url,
        relay_routes(client, redis, settings, pool),
        batch_size=settings.relay_batch_size,
        batch_max=settings.batch_max,
        poll_seconds=settings.relay_poll_seconds,
        lease_seconds=settings.relay_lease_seconds,
        admission=WorkflowAdmission(settings.relay_max_in_flight),
        dead_letters=DeadLetterLimits(settings.outbox_max_attempts, settings.outbox_max_failing_seconds),
        listen=settings.outbox_notify,
    )
    reconciler = Reconciler(pool, client, interval_seconds=settings.reconcile_seconds)
    # The relay alone reports the stage health read from Postgres (ackflow/metrics/stages.py).
    refreshers = (*_dependency_checks(pool, client, redis), stage_health_refresher(pool))
    background = [
        asyncio.create_task(reconciler.run(stop), name="reconcile"),
        asyncio.create_task(ExpirySweep(pool).run(stop), name="expiry"),
        asyncio.create_task(Pruner.from_settings(pool, settings).run(stop), name="retention"),
    ]
    try:
        with REFRESH.refreshing(*refreshers):
            await relay.run(stop)
    finally:
        for task in background:
            task.cancel()  # a prune batch under way rolls back: the next pass deletes it
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def run_worker(
    settings: Settings, stop: asyncio.Event, *, pool: asyncpg.Pool, client: Client, registry: HandlerRegistry
) -> None:
    """Run the Temporal worker (and the webhook dispatcher) until `stop` is set."""
    from ackflow.temporal import traced
    from activities import run_worker as run

    with REFRESH.refreshing(*_dependency_checks(pool, client)):
        await run(traced(client), pool, registry, settings, stop)


def _dependency_checks(pool: asyncpg.Pool, client: Client, redis: Redis | None = None) -> list[Refresher]:
    """Scrape-time checks of what a relay or worker uses: SELECT 1, a Temporal health check, a Redis PING."""
    checks = [
        dependency_check("postgres", functools.partial(pool.fetchval, "SELECT 1")),
        dependency_check("temporal", client.service_client.check_health),
    ]
    if redis is not None:
        checks.append(dependency_check("redis", redis.ping))
    return checks
