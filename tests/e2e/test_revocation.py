"""Revoking a key ends what it opened: its open streams, its capability URLs; and only that one key."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx
import websockets
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow.db.queries import sql
from ackflow.handlers import HandlerRegistry
from ackflow.settings import Settings
from ackflow.tenants import hash_api_key
from tests.conftest import Tenant, api_client, running_roles
from tests.helpers import assert_problem, read_sse

ACKFLOW = str(Path(sys.executable).parent / "ackflow")


async def ackflow(settings: Settings, *args: str) -> tuple[int, str]:
    """Run the CLI; its exit code and its stdout and stderr together."""
    env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    process = await asyncio.create_subprocess_exec(
        ACKFLOW, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def new_key(settings: Settings, tenant: str = "acme") -> str:
    code, out = await ackflow(settings, "key", "create", tenant)
    assert code == 0, out
    return out.strip().split()[-1]


async def insert_key(pool: asyncpg.Pool, tenant_id: uuid.UUID, key: str) -> None:
    """A key with a prefix of the test's choosing (created keys have random ones)."""
    prefix = key.split("_")[1]
    await pool.execute(sql("create_api_key"), uuid.uuid4(), tenant_id, prefix, hash_api_key(key))


async def submit_sleep(http: httpx.AsyncClient) -> dict[str, str]:
    accepted = await http.post("/v1/requests", json={"kind": "sleep", "payload": {"seconds": 30}})
    assert accepted.status_code == 202, accepted.text
    return {"id": accepted.json()["id"], "events": accepted.json()["links"]["events"]}


async def test_open_sse_websocket_and_long_poll_end_within_seconds_of_their_keys_revocation(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    cached_long = replace(settings, auth_cache_seconds=300)  # only the announcement can make it quick
    key = await new_key(cached_long)
    async with running_roles(cached_long, pool, redis, temporal, registry), api_client(cached_long, key) as http:
        request = await submit_sleep(http)
        ws_url = f"ws://127.0.0.1:{cached_long.http_port}/v1/requests/{request['id']}/ws"
        async with (
            http.stream("GET", f"/v1/requests/{request['id']}/events") as by_key,
            http.stream("GET", "/v1/events") as tenant_stream,
            http.stream("GET", request["events"], headers={"Authorization": ""}) as by_token,
            websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {key}"}) as socket,
            api_client(cached_long, tenant.api_key) as other_key,
            other_key.stream("GET", f"/v1/requests/{request['id']}/events") as untouched,
        ):
            assert {by_key.status_code, tenant_stream.status_code, by_token.status_code} == {200}
            assert json.loads(await socket.recv())["event"] == "request.accepted"
            long_poll = asyncio.create_task(http.get(f"/v1/requests/{request['id']}", params={"wait": 30}, timeout=40))

            code, said = await ackflow(cached_long, "key", "revoke", "acme", key.split("_")[1])
            assert code == 0 and "every gateway now" in said, said

            ended = [read_sse(by_key), read_sse(tenant_stream), read_sse(by_token)]
            for events in await asyncio.wait_for(asyncio.gather(*ended), timeout=5):
                assert all(e.event != "request.done" for e in events), "ended by the revocation, not the request"
            async with asyncio.timeout(5):
                while True:
                    try:
                        await socket.recv()
                    except websockets.ConnectionClosed as closed:
                        assert closed.rcvd is not None and closed.rcvd.code == 1008
                        break
            assert_problem(await asyncio.wait_for(long_poll, timeout=5), 401, "unauthorized")
            # A stream of another key goes on: it still sees the request being cancelled.
            assert (await other_key.post(f"/v1/requests/{request['id']}/cancel")).status_code == 202
            events = await asyncio.wait_for(read_sse(untouched, until=lambda e: e.event == "request.cancelled"), 10)
            assert events[-1].event == "request.cancelled"


async def test_streams_end_within_the_cache_window_when_the_announcement_is_missed(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    quick = replace(settings, auth_cache_seconds=1)
    key = await new_key(quick)
    async with running_roles(quick, pool, redis, temporal, registry), api_client(quick, key) as http:
        async with http.stream("GET", "/v1/events") as stream:
            assert stream.status_code == 200
            await pool.execute("UPDATE api_keys SET revoked_at = now() WHERE prefix = $1", key.split("_")[1])
            await asyncio.wait_for(read_sse(stream), timeout=5)  # nothing was announced on Redis


async def test_a_capability_url_minted_with_a_revoked_key_answers_401_problem_json(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    cached_long = replace(settings, auth_cache_seconds=300)
    key = await new_key(cached_long)
    async with running_roles(cached_long, pool, redis, temporal, registry), api_client(cached_long, key) as http:
        accepted = await http.post("/v1/requests", json={"kind": "echo", "payload": {}})
        capability = accepted.json()["links"]["events"]
        async with api_client(cached_long, None) as anonymous:
            async with anonymous.stream("GET", capability) as before:
                assert before.status_code == 200  # the key is active, and now cached by the gateway
            code, said = await ackflow(cached_long, "key", "revoke", "acme", key)
            assert code == 0, said
            problem = assert_problem(await anonymous.get(capability), 401, "unauthorized")
            assert "revoked" in problem["detail"]
            token = capability.split("token=")[1]
            unbound = token.split(".")[0] + "." + ".".join(token.split(".")[2:])  # the form before key ids
            stale = await anonymous.get(capability.split("?")[0], params={"token": unbound})
            assert "predates" in assert_problem(stale, 401, "unauthorized")["detail"]


async def test_revoking_in_one_tenant_never_touches_a_key_of_another_with_the_same_prefix(
    settings: Settings, pool: asyncpg.Pool, tenant: Tenant, other_tenant: Tenant
) -> None:
    mine, theirs = "ak_0badcafe_" + "m" * 43, "ak_0badcafe_" + "t" * 43
    await insert_key(pool, tenant.id, mine)
    await insert_key(pool, other_tenant.id, theirs)

    code, said = await ackflow(settings, "key", "revoke", "acme", "ak_0badcafe_…")
    assert code == 0, said
    revoked = {
        row["key_hash"]: row["revoked_at"] is not None
        for row in await pool.fetch("SELECT key_hash, revoked_at FROM api_keys WHERE prefix = '0badcafe'")
    }
    assert revoked == {hash_api_key(mine): True, hash_api_key(theirs): False}

    code, said = await ackflow(settings, "key", "revoke", "acme", "0badcafe")
    assert code == 1 and "no active key" in said, "nothing left to revoke in acme; globex's key is not acme's"


async def test_an_ambiguous_prefix_revokes_nothing_and_the_whole_key_revokes_exactly_that_one(
    settings: Settings, pool: asyncpg.Pool, tenant: Tenant
) -> None:
    first, second = "ak_5ca1ab1e_" + "a" * 43, "ak_5ca1ab1e_" + "b" * 43
    await insert_key(pool, tenant.id, first)
    await insert_key(pool, tenant.id, second)

    code, said = await ackflow(settings, "key", "revoke", "acme", "5ca1ab1e")
    assert code == 1 and "2 active keys" in said and "whole key" in said, said
    assert await pool.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL") == 0

    code, said = await ackflow(settings, "key", "revoke", "acme", second)
    assert code == 0 and second not in said, said
    rows = await pool.fetch("SELECT key_hash FROM api_keys WHERE revoked_at IS NOT NULL")
    assert [bytes(row["key_hash"]) for row in rows] == [hash_api_key(second)]
