"""Who may read /metrics, and where: the gateway's HTTP port by default, a metrics port instead when
ACKFLOW_METRICS_PORT is set, and only with the bearer token when ACKFLOW_METRICS_TOKEN is set."""

from __future__ import annotations

import socket
from dataclasses import replace

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow import devstack
from ackflow.errors import ConfigurationError
from ackflow.handlers import HandlerRegistry
from ackflow.metrics.serve import serving_metrics
from ackflow.settings import Settings
from tests.conftest import running_roles
from tests.helpers import assert_problem
from tests.metrics_scrape import scrape

TOKEN = "metrics-token-for-tests"


async def test_the_gateway_serves_metrics_on_its_http_port_to_anyone_by_default(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry
) -> None:
    async with running_roles(settings, pool, redis, temporal, registry, relay=False, worker=False):
        page = await scrape(f"http://127.0.0.1:{settings.http_port}/metrics")
        async with httpx.AsyncClient() as http:
            schema = (await http.get(f"http://127.0.0.1:{settings.http_port}/schema/openapi.json")).json()
    assert page.value("ackflow_dependency_up", dependency="postgres") == 1
    assert page.types["ackflow_accepts_total"] == "counter"
    assert "/metrics" not in schema["paths"]


async def test_with_a_token_the_gateways_metrics_want_the_bearer_token(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry
) -> None:
    settings = replace(settings, metrics_token=TOKEN)
    url = f"http://127.0.0.1:{settings.http_port}/metrics"
    async with running_roles(settings, pool, redis, temporal, registry, relay=False, worker=False):
        async with httpx.AsyncClient() as http:
            missing = await http.get(url)
            wrong = await http.get(url, headers={"Authorization": f"Bearer {TOKEN}x"})
        page = await scrape(url, TOKEN)
    assert_problem(missing, 401, "unauthorized")
    assert_problem(wrong, 401, "unauthorized")
    assert TOKEN not in missing.text
    assert page.has("ackflow_build_info")


async def test_with_a_metrics_port_the_gateway_serves_metrics_only_there_and_guards_it_with_the_token(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry
) -> None:
    settings = replace(settings, metrics_port=devstack.free_port(), metrics_token=TOKEN)
    side = f"http://127.0.0.1:{settings.metrics_port}"
    async with (
        serving_metrics(settings),
        running_roles(settings, pool, redis, temporal, registry, relay=False, worker=False),
        httpx.AsyncClient() as http,
    ):
        on_http_port = await http.get(f"http://127.0.0.1:{settings.http_port}/metrics")
        without_token = await http.get(f"{side}/metrics")
        elsewhere = await http.get(f"{side}/other", headers={"Authorization": f"Bearer {TOKEN}"})
        page = await scrape(f"{side}/metrics", TOKEN)
    assert on_http_port.status_code == 404
    assert without_token.status_code == 401
    assert without_token.headers["www-authenticate"].startswith("Bearer")
    assert elsewhere.status_code == 404
    assert page.value("ackflow_dependency_up", dependency="redis") == 1
    assert not devstack.port_open(settings.metrics_port or 0)  # stopped with the block


async def test_a_metrics_port_already_taken_is_one_error_naming_the_variable(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = replace(settings, metrics_port=taken.getsockname()[1])
        with pytest.raises(ConfigurationError, match=r"^ACKFLOW_METRICS_PORT=\d+ on ACKFLOW_METRICS_HOST=127\.0\.0\.1"):
            async with serving_metrics(settings):
                pass
