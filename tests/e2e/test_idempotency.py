"""Idempotency-Key on POST /v1/requests: a retry never creates a second request."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx

from ackflow.settings import Settings
from tests.conftest import Tenant, api_client
from tests.helpers import assert_problem

BODY = {"kind": "echo", "payload": {"order": 42}}


async def count_requests(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM requests"))


async def test_a_retry_with_the_same_key_gets_the_original_answer_and_creates_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await client.post("/v1/requests", json=BODY, headers=key)
    again = await client.post("/v1/requests", json=BODY, headers=key)

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert await count_requests(pool) == 1


async def test_the_same_key_with_a_different_body_is_refused(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    key = {"Idempotency-Key": "order-42"}
    assert (await client.post("/v1/requests", json=BODY, headers=key)).status_code == 202

    other = await client.post("/v1/requests", json={**BODY, "payload": {"order": 43}}, headers=key)

    body = assert_problem(other, 422, "invalid-input")
    assert body["errors"][0]["field"] == "Idempotency-Key"
    assert await count_requests(pool) == 1


async def test_fifty_clients_racing_one_key_create_exactly_one_request(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    key = {"Idempotency-Key": f"race-{uuid.uuid4().hex}"}

    responses = await asyncio.gather(*(client.post("/v1/requests", json=BODY, headers=key) for _ in range(50)))

    assert await count_requests(pool) == 1
    accepted = [r for r in responses if r.status_code == 202]
    assert accepted and {r.json()["id"] for r in accepted} == {accepted[0].json()["id"]}
    for response in responses:
        assert response.status_code in (202, 409), response.text
        if response.status_code == 409:
            assert_problem(response, 409, "conflict")


async def test_keys_are_scoped_to_the_tenant(
    client: httpx.AsyncClient, settings: Settings, other_tenant: Tenant, pool: asyncpg.Pool
) -> None:
    key = {"Idempotency-Key": "shared-name"}
    mine = await client.post("/v1/requests", json=BODY, headers=key)
    async with api_client(settings, other_tenant.api_key) as other:
        theirs = await other.post("/v1/requests", json=BODY, headers=key)

    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["id"] != theirs.json()["id"]
    assert await count_requests(pool) == 2


async def test_malformed_keys_are_refused_and_write_nothing(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    for bad in [b"", b"x" * 256, "caf\u00e9".encode(), b'""']:
        response = await client.post("/v1/requests", json=BODY, headers={"Idempotency-Key": bad})
        assert_problem(response, 400, "invalid-parameter")
    assert await count_requests(pool) == 0
