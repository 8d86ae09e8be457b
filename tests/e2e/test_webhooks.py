"""Partner webhooks end to end: register, receive verified events, retries, rotation, replay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow.handlers import HandlerRegistry
from ackflow.settings import Settings
from tests.conftest import Tenant, api_client, running_roles
from tests.helpers import assert_eventually, wait_for_status
from tests.receiver import Receiver, running_receiver

FAST_SCHEDULE = (0.2, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as running:
        yield running


@pytest.fixture
async def http(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> AsyncIterator[httpx.AsyncClient]:
    """The whole stack, with a retry schedule of fractions of a second instead of hours."""
    fast = replace(settings, webhook_retry_schedule=FAST_SCHEDULE, webhook_lease_seconds=2)
    async with running_roles(fast, pool, redis, temporal, registry), api_client(fast, tenant.api_key) as client:
        yield client


async def register(http: httpx.AsyncClient, url: str, event_types: list[str], **extra: Any) -> dict[str, Any]:
    response = await http.post("/v1/webhooks", json={"url": url, "event_types": event_types, **extra})
    assert response.status_code == 201, response.text
    return dict(response.json())


async def submit(http: httpx.AsyncClient, kind: str, payload: dict[str, Any], **extra: Any) -> str:
    response = await http.post("/v1/requests", json={"kind": kind, "payload": payload, **extra})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def test_done_reaches_each_subscribed_endpoint_once_verified_and_filtered(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    only_done = await register(http, receiver.url("/done"), ["request.done"])
    everything = await register(http, receiver.url("/all"), ["request.*"])
    only_failed = await register(http, receiver.url("/failed"), ["request.failed"])
    assert only_done["secret"].startswith("whsec_") and len(only_done["secret"]) > 40

    request_id = await submit(http, "echo", {"hello": "partner"})
    await wait_for_status(http, request_id, {"DONE"})
    await assert_eventually(lambda: _count(receiver, "/all", 2), message="request.* endpoint got too little")
    await assert_eventually(lambda: _count(receiver, "/done", 1), message="request.done endpoint got nothing")

    [done] = receiver.at("/done")
    body = done.verify(only_done["secret"])
    assert body["type"] == "request.done" and body["data"]["id"] == request_id
    assert body["data"]["result"] == {"hello": "partner"} and body["timestamp"]
    # Deliveries are concurrent, so not ordered: receivers order by the request's version.
    bodies = sorted((r.verify(everything["secret"]) for r in receiver.at("/all")), key=lambda b: b["data"]["version"])
    assert [b["type"] for b in bodies] == ["request.processing", "request.done"]
    assert receiver.at("/failed") == []
    assert only_failed["id"]


async def test_a_receiver_failing_twice_gets_it_on_the_third_attempt_and_the_log_shows_three(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await register(http, receiver.url(), ["request.done"])
    receiver.reply_with(500, 500)

    request_id = await submit(http, "echo", {})
    await wait_for_status(http, request_id, {"DONE"})
    deliveries = await assert_eventually(
        lambda: _deliveries(http, endpoint["id"], "succeeded"), timeout=30, message="never succeeded"
    )

    assert len(receiver.received) == 3
    assert len({r.webhook_id for r in receiver.received}) == 1, "webhook-id must be stable across retries"
    assert len({r.body for r in receiver.received}) == 1, "the body never changes under one webhook-id"
    detail = (await http.get(f"/v1/deliveries/{deliveries[0]['id']}")).json()
    assert [a["status_code"] for a in detail["attempt_log"]] == [500, 500, 200]
    assert [a["trigger"] for a in detail["attempt_log"]] == ["first", "retry", "retry"]
    assert detail["state"] == "succeeded" and detail["attempts"] == 3


async def _count(receiver: Receiver, path: str, expected: int) -> bool:
    assert len(receiver.at(path)) <= expected, f"{path} received more than {expected}"
    return len(receiver.at(path)) == expected


async def _deliveries(http: httpx.AsyncClient, endpoint_id: str, state: str) -> list[dict[str, Any]]:
    page = (await http.get(f"/v1/webhooks/{endpoint_id}/deliveries", params={"status": state})).json()
    return list(page["items"])
