"""Capability URLs are readable from any origin; API-key routes keep the configured CORS."""

from __future__ import annotations

from dataclasses import replace

import asyncpg
import httpx
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow.handlers import HandlerRegistry
from ackflow.settings import Settings
from tests.conftest import Tenant, api_client, running_roles
from tests.helpers import assert_problem, read_sse

PARTNER = {"Origin": "https://partner.example.org"}


async def test_a_capability_stream_is_readable_from_any_origin_under_the_defaults(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    accepted = (await client.post("/v1/requests", json={"kind": "echo", "payload": {}})).json()
    async with api_client(settings, None) as browser:  # no API key, no cookie: the URL is the secret
        async with browser.stream("GET", accepted["links"]["events"], headers=PARTNER) as response:
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == "*"
            assert "access-control-allow-credentials" not in response.headers
            assert [e.event for e in await read_sse(response)][-1] == "request.done"
        finished = await browser.get(accepted["links"]["events"], headers={**PARTNER, "Last-Event-ID": "999999999"})
        assert finished.status_code == 204 and finished.headers["access-control-allow-origin"] == "*"
        forged = await browser.get(
            f"/v1/requests/{accepted['id']}/events", params={"token": "a.b.1.c"}, headers=PARTNER
        )
        assert_problem(forged, 401, "unauthorized")
        assert forged.headers["access-control-allow-origin"] == "*", "so a partner's page can read why"

    with_key = await client.get(f"/v1/requests/{accepted['id']}/events", headers=PARTNER)
    assert with_key.status_code == 200 and "access-control-allow-origin" not in with_key.headers
    listing = await client.get("/v1/requests", headers=PARTNER)
    assert listing.status_code == 200 and "access-control-allow-origin" not in listing.headers
    async with client.stream("GET", "/v1/events", headers=PARTNER) as tenant_stream:
        assert tenant_stream.status_code == 200 and "access-control-allow-origin" not in tenant_stream.headers


async def test_with_cors_configured_capability_streams_stay_open_to_any_origin_and_api_routes_to_the_listed_ones(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    own = replace(settings, cors_origins=("https://app.example.com",))
    listed = {"Origin": "https://app.example.com"}
    async with running_roles(own, pool, redis, temporal, registry), api_client(own, tenant.api_key) as http:
        accepted = (await http.post("/v1/requests", json={"kind": "echo", "payload": {}})).json()
        async with api_client(own, None) as browser:
            async with browser.stream("GET", accepted["links"]["events"], headers=PARTNER) as response:
                assert response.headers["access-control-allow-origin"] == "*"
                assert [e.event for e in await read_sse(response)][-1] == "request.done"
        assert "access-control-allow-origin" not in (await http.get("/v1/requests", headers=PARTNER)).headers
        listed_answer = await http.get("/v1/requests", headers=listed)
        assert listed_answer.headers["access-control-allow-origin"] == "https://app.example.com"
