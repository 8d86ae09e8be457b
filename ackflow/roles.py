"""The long-running roles (gateway, relay, worker) as coroutines that run until `stop` is set.

The CLI runs each alone in production and all together under `ackflow dev`. This is the one
place that wires the service packages together; the packages themselves never import each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import asyncpg
import uvicorn
from redis.asyncio import Redis

from ackflow.contracts import STATUS_TOPICS, TOPIC_ACCEPTED, TOPIC_CANCEL_REQUESTED
from ackflow.events import Route
from ackflow.handlers import HandlerRegistry
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
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
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
    from outbox_cdc import TemporalDispatcher

    dispatcher = TemporalDispatcher(client, settings.task_queue)
    on_status = StatusEventRoute(WebhookFanout(pool), StatusPublisher(redis))
    routes: dict[str, Route] = {
        TOPIC_ACCEPTED: dispatcher.start_request,
        TOPIC_CANCEL_REQUESTED: dispatcher.cancel_request,
    }
    routes.update({topic: on_status for topic in STATUS_TOPICS})
    return routes


async def run_relay(
    settings: Settings, stop: asyncio.Event, *, pool: asyncpg.Pool, client: Client, redis: Redis
) -> None:
    """Relay the outbox until `stop` is set."""
    from outbox_cdc import OutboxRelay, WorkflowAdmission

    relay = OutboxRelay(
        pool,
        settings.database_url,
        relay_routes(client, redis, settings, pool),
        batch_size=settings.relay_batch_size,
        poll_seconds=settings.relay_poll_seconds,
        admission=WorkflowAdmission(settings.relay_max_in_flight),
        listen=settings.outbox_notify,
    )
    await relay.run(stop)


async def run_worker(
    settings: Settings, stop: asyncio.Event, *, pool: asyncpg.Pool, client: Client, registry: HandlerRegistry
) -> None:
    """Run the Temporal worker until `stop` is set."""
    from activities.worker import run_worker as run

    await run(client, pool, registry, settings, stop)
