"""Metrics end to end: gateway, relay and worker as separate `ackflow` processes, each scraped on its
own /metrics (the gateway on its HTTP port, relay and worker on ACKFLOW_METRICS_PORT), before and
after real traffic: requests that end DONE and FAILED, refused POSTs, an SSE stream open while
scraping, a webhook endpoint that receives deliveries and one that cannot, and an outbox row no relay
can dispatch. Every catalogue metric must be exposed by every role, and the counters and histograms
that traffic moves must have moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from ackflow import devstack
from ackflow.settings import Settings
from tests.conftest import Servers, Tenant
from tests.helpers import assert_eventually, wait_for_status
from tests.metrics_catalogue import CATALOGUE
from tests.metrics_scrape import Scrape, scrape
from tests.receiver import running_receiver

ROOT = Path(__file__).resolve().parents[2]
UNROUTED_TOPIC = "request.from_a_newer_relay"  # no route: postponed, then dead-lettered (max 2 attempts)


@dataclass
class Roles:
    """The three role processes' addresses: the API, and where each role's metrics are."""

    api_url: str
    metrics: dict[str, str]  # role -> its /metrics URL


def role_env(servers: Servers, settings: Settings) -> dict[str, str]:
    """The environment every role process gets: the test servers and this test's database and queue."""
    return {
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": devstack.redis_url(servers.redis_port),
        "TEMPORAL_ADDRESS": servers.temporal_address,
        "ACKFLOW_TASK_QUEUE": settings.task_queue,
        "ACKFLOW_HANDLERS": "activities.examples",
        "ACKFLOW_PORT": str(settings.http_port),
        "ACKFLOW_WEBHOOK_ALLOW_PRIVATE": "true",
        "ACKFLOW_WEBHOOK_RETRY_SCHEDULE": "0.2",  # two attempts, then a delivery has failed
        "ACKFLOW_OUTBOX_MAX_ATTEMPTS": "2",
        "ACKFLOW_RELAY_POLL_SECONDS": "0.5",
        "ACKFLOW_DB_POOL_SIZE": "4",
    }


@contextlib.asynccontextmanager
async def role_processes(env: dict[str, str], logs: Path, ports: dict[str, int]) -> AsyncIterator[None]:
    """`python -m ackflow.cli ROLE` for each role in `ports` (a metrics port, or the gateway's HTTP
    port), each ready once its port answers; stopped by the pids started here, whatever happened."""
    processes: list[devstack.ServerProcess] = []
    try:
        for role, port in ports.items():
            extra = {} if role == "gateway" else {"ACKFLOW_METRICS_PORT": str(port)}
            process = devstack.ServerProcess(
                role,
                [sys.executable, "-m", "ackflow.cli", role],
                logs / f"{role}.log",
                ready=lambda port=port: devstack.port_open(port),  # type: ignore[misc]
                env={**env, **extra},
            )
            process.start()
            processes.append(process)
        for process in processes:
            await asyncio.to_thread(process.wait_until_ready, 60)
        yield
    finally:
        await asyncio.to_thread(devstack.stop_all, processes, 15)


@pytest.fixture
async def roles(servers: Servers, settings: Settings, tenant: Tenant, tmp_path: Path) -> AsyncIterator[Roles]:
    ports = {"worker": devstack.free_port(), "relay": devstack.free_port(), "gateway": settings.http_port}
    async with role_processes(role_env(servers, settings), tmp_path, ports):
        api = f"http://127.0.0.1:{settings.http_port}"
        yield Roles(
            api,
            {
                "gateway": f"{api}/metrics",
                "relay": f"http://127.0.0.1:{ports['relay']}/metrics",
                "worker": f"http://127.0.0.1:{ports['worker']}/metrics",
            },
        )


async def submit(http: httpx.AsyncClient, kind: str, payload: dict[str, Any]) -> str:
    response = await http.post("/v1/requests", json={"kind": kind, "payload": payload})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def register(http: httpx.AsyncClient, url: str, event_types: list[str]) -> None:
    response = await http.post("/v1/webhooks", json={"url": url, "event_types": event_types})
    assert response.status_code == 201, response.text


async def scrape_all(roles: Roles) -> dict[str, Scrape]:
    return {role: await scrape(url) for role, url in roles.metrics.items()}


async def send_traffic(roles: Roles, tenant: Tenant, pool: asyncpg.Pool) -> None:
    """Everything the metrics must count, waited for until it has happened."""
    async with (
        httpx.AsyncClient(base_url=roles.api_url, headers={"Authorization": f"Bearer {tenant.api_key}"}) as http,
        running_receiver() as receiver,
    ):
        await register(http, receiver.url("/ok"), ["request.*"])
        # One delivery (of the one FAILED request) that can never connect: two attempts, then failed.
        await register(http, f"http://127.0.0.1:{devstack.free_port()}/nobody-listens", ["request.failed"])
        done = [await submit(http, "echo", {"n": n}) for n in range(3)]
        failed = await submit(http, "fail", {"message": "no"})
        assert (await http.post("/v1/requests", json={"kind": "no-such-kind", "payload": {}})).status_code == 422
        async with httpx.AsyncClient(base_url=roles.api_url) as anonymous:
            assert (await anonymous.post("/v1/requests", json={"kind": "echo"})).status_code == 401
        for request_id in done:
            await wait_for_status(http, request_id, {"DONE"}, timeout=60)
        await wait_for_status(http, failed, {"FAILED"}, timeout=60)
        await pool.execute(
            "INSERT INTO outbox (topic, tenant_id, request_id) VALUES ($1, $2, $3)",
            UNROUTED_TOPIC,
            tenant.id,
            uuid.uuid4(),
        )
        await assert_eventually(lambda: _delivered_to(receiver, 8), timeout=60, message="deliveries to /ok")


async def _delivered_to(receiver: Any, count: int) -> bool:
    return len(receiver.at("/ok")) >= count  # 3 x (processing, done) + (processing, failed)


async def test_every_role_exports_the_catalogue_and_real_traffic_moves_its_metrics(
    roles: Roles, tenant: Tenant, pool: asyncpg.Pool
) -> None:
    async with asyncio.timeout(240):
        before = await scrape_all(roles)
        for role, page in before.items():
            missing = {name for name, (kind, _) in CATALOGUE.items() if page.types.get(name) != kind}
            assert missing == set(), f"{role} does not expose {sorted(missing)}"
            assert page.has("ackflow_build_info") and page.has("process_cpu_seconds_total"), role

        await send_traffic(roles, tenant, pool)
        await _sse_stream_is_counted_while_open(roles, tenant, before["gateway"])
        relay = await assert_eventually(
            lambda: _relay_saw_the_failures(roles), timeout=60, message="relay: dead letter and failed delivery"
        )
        after = await scrape_all(roles)

    _assert_gateway_counted(before["gateway"], after["gateway"])
    assert relay is not None
    _assert_relay_counted(before["relay"], relay)
    _assert_worker_counted(before["worker"], after["worker"])


async def _sse_stream_is_counted_while_open(roles: Roles, tenant: Tenant, before: Scrape) -> None:
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    async with (
        httpx.AsyncClient(base_url=roles.api_url, headers=headers, timeout=10) as http,
        http.stream("GET", "/v1/events") as stream,
    ):
        assert stream.status_code == 200
        during = await scrape(roles.metrics["gateway"])
        sse = before.value("ackflow_streams_open", transport="sse")
        assert during.value("ackflow_streams_open", transport="sse") == sse + 1


async def _relay_saw_the_failures(roles: Roles) -> Scrape | None:
    page = await scrape(roles.metrics["relay"])
    dead = page.value("ackflow_outbox_dead_lettered_total", topic=UNROUTED_TOPIC) == 1
    failed = page.value("ackflow_deliveries", state="failed") >= 1
    return page if dead and failed and page.value("ackflow_outbox_dead_letters") >= 1 else None


def _moved(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def _assert_gateway_counted(before: Scrape, after: Scrape) -> None:
    accepts = "ackflow_accepts_total"
    assert _moved(before, after, accepts, tenant="acme", kind="echo", status="202") == 3
    assert _moved(before, after, accepts, tenant="acme", kind="fail", status="202") == 1
    assert _moved(before, after, accepts, tenant="acme", kind="unknown", status="422") == 1
    assert _moved(before, after, accepts, tenant="unauthenticated", kind="unknown", status="401") == 1
    assert _moved(before, after, "ackflow_accept_duration_seconds_count") == 6
    assert after.value("ackflow_dependency_up", dependency="postgres") == 1
    assert after.value("ackflow_dependency_up", dependency="redis") == 1
    assert not after.has("ackflow_dependency_up", dependency="temporal")  # the gateway never talks to Temporal


def _assert_relay_counted(before: Scrape, after: Scrape) -> None:
    lag = "ackflow_relay_lag_seconds_count"
    assert _moved(before, after, lag, topic="request.batch") >= 1  # the accepted requests, started in batches
    assert _moved(before, after, lag, topic="request.done") == 3
    assert _moved(before, after, lag, topic="request.failed") == 1
    assert _moved(before, after, "ackflow_relay_dispatch_errors_total", topic=UNROUTED_TOPIC) == 2
    assert after.has("ackflow_outbox_rows", topic="request.accepted")
    assert after.has("ackflow_outbox_oldest_age_seconds", topic="request.accepted")
    assert after.has("ackflow_admission_oldest_wait_seconds")
    assert after.has("ackflow_webhook_endpoints_disabled")
    for dependency in ("postgres", "redis", "temporal"):
        assert after.value("ackflow_dependency_up", dependency=dependency) == 1, dependency


def _assert_worker_counted(before: Scrape, after: Scrape) -> None:
    handler = "ackflow_handler_duration_seconds_count"
    assert _moved(before, after, handler, kind="echo", outcome="done") == 3
    assert _moved(before, after, handler, kind="fail", outcome="failed") == 1
    transitions = "ackflow_status_transitions_total"
    assert _moved(before, after, transitions, status="PROCESSING") == 4
    assert _moved(before, after, transitions, status="DONE") == 3
    assert _moved(before, after, transitions, status="FAILED") == 1
    assert _moved(before, after, "ackflow_webhook_attempts_total", outcome="delivered") >= 8
    assert _moved(before, after, "ackflow_webhook_attempts_total", outcome="error") >= 2
    assert _moved(before, after, "ackflow_webhook_attempt_duration_seconds_count") >= 10
    for dependency in ("postgres", "temporal"):
        assert after.value("ackflow_dependency_up", dependency=dependency) == 1, dependency
