"""Every answer to POST /v1/requests is counted, whoever refused it (a guard, the body limit,
validation, a domain error), under labels that a client cannot make unbounded."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow.handlers import HandlerRegistry
from ackflow.settings import Settings
from activities.worker import register_kinds
from tests.conftest import Tenant, api_client, running_roles


@pytest.fixture
async def gateway(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway alone (the kinds registered as a worker would), and a client of `tenant`."""
    await register_kinds(pool, registry, settings.task_queue)
    async with (
        running_roles(settings, pool, redis, temporal, registry, relay=False, worker=False),
        api_client(settings, tenant.api_key) as http,
    ):
        yield http


def accepts(tenant: str, kind: str, status: int) -> float:
    labels = {"tenant": tenant, "kind": kind, "status": str(status)}
    return REGISTRY.get_sample_value("ackflow_accepts_total", labels) or 0.0


async def test_refused_posts_are_counted_by_status_with_bounded_kind_labels(
    gateway: httpx.AsyncClient, settings: Settings
) -> None:
    made_up = "made-up-kind-7f3a"
    before = {
        key: accepts(*key)
        for key in [
            ("acme", "echo", 202),
            ("acme", "echo", 422),
            ("acme", "unknown", 422),
            ("acme", "unknown", 413),
            ("acme", "unknown", 415),
            ("unauthenticated", "unknown", 401),
        ]
    }
    durations = REGISTRY.get_sample_value("ackflow_accept_duration_seconds_count") or 0.0

    assert (await gateway.post("/v1/requests", json={"kind": "echo", "payload": {}})).status_code == 202
    # Refused by the handler, once it knows the kind: a payload Postgres cannot store; a kind no worker has.
    nul = await gateway.post("/v1/requests", json={"kind": "echo", "payload": {"text": "\u0000"}})
    assert nul.status_code == 422, nul.text
    assert (await gateway.post("/v1/requests", json={"kind": made_up, "payload": {}})).status_code == 422
    huge = b'{"kind": "echo", "payload": "' + b"x" * settings.max_body_bytes + b'"}'
    oversized = await gateway.post("/v1/requests", content=huge, headers={"content-type": "application/json"})
    assert oversized.status_code == 413
    not_json = await gateway.post("/v1/requests", content=b"kind=echo", headers={"content-type": "text/plain"})
    assert not_json.status_code == 415
    async with httpx.AsyncClient(base_url=str(gateway.base_url)) as anonymous:
        assert (await anonymous.post("/v1/requests", json={"kind": "echo", "payload": {}})).status_code == 401

    moved = {key: accepts(*key) - value for key, value in before.items()}
    assert moved == {
        ("acme", "echo", 202): 1,
        ("acme", "echo", 422): 1,  # a kind once accepted keeps its label when refused
        ("acme", "unknown", 422): 1,  # a kind no request was accepted for does not become a label
        ("acme", "unknown", 413): 1,
        ("acme", "unknown", 415): 1,
        ("unauthenticated", "unknown", 401): 1,
    }
    assert (
        REGISTRY.get_sample_value("ackflow_accepts_total", {"tenant": "acme", "kind": made_up, "status": "422"}) is None
    )
    assert (REGISTRY.get_sample_value("ackflow_accept_duration_seconds_count") or 0.0) - durations == 6
