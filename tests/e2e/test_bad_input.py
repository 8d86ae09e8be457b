"""Hostile input on every gateway route: a clear 4xx problem+json, never a 5xx, nothing written, still serving.

Each test starts the whole stack (about a second), so each one runs a table of cases against one
route family, names the case in every failure, and ends by checking that the database did not
change and that a valid request is still accepted.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow.db.queries import sql
from ackflow.handlers import HandlerRegistry
from ackflow.settings import Settings
from ackflow.tenants import create_api_key, generate_api_key, hash_api_key
from tests.conftest import Tenant, api_client, running_roles
from tests.helpers import assert_eventually, assert_problem, wait_for_status

JSON = {"Content-Type": "application/json"}
VALID_BODY = b'{"kind": "echo", "payload": {"ok": true}}'
NO_SUCH_ID = "00000000-0000-4000-8000-000000000000"


pytestmark = pytest.mark.usefixtures("no_gateway_errors_logged")


@dataclass(frozen=True)
class Case:
    """One hostile request and the problem it must get."""

    name: str
    status: int
    slug: str | None
    field: str | None = None
    method: str = "POST"
    path: str = "/v1/requests"
    content: bytes | None = None
    headers: dict[str, str] | None = None  # JSON unless given
    params: dict[str, str] | None = None


async def send(http: httpx.AsyncClient, case: Case) -> httpx.Response:
    headers = JSON if case.headers is None else case.headers
    return await http.request(case.method, case.path, content=case.content, headers=headers, params=case.params)


def expect_problem(case: str, response: httpx.Response, status: int, slug: str | None, field: str | None = None) -> Any:
    """assert_problem, naming the case; with `field`, the problem's `errors` must name that field."""
    try:
        body = assert_problem(response, status, slug)
    except (AssertionError, KeyError, ValueError) as exc:
        raise AssertionError(f"case {case!r}: {exc!r}") from None
    if field is not None:
        named = [error.get("field") for error in body.get("errors") or []]
        assert field in named, f"case {case!r}: errors should name {field!r}: {body}"
    return body


async def check_cases(http: httpx.AsyncClient, cases: list[Case]) -> None:
    """Send every case, then fail once listing each case that did not get its problem."""
    failures = []
    for case in cases:
        try:
            expect_problem(case.name, await send(http, case), case.status, case.slug, case.field)
        except AssertionError as exc:
            failures.append(str(exc)[:300])
    assert not failures, "\n".join([f"{len(failures)} of {len(cases)} cases failed:", *failures])


async def table_state(pool: asyncpg.Pool) -> dict[str, int]:
    """What a bad request must not change: row counts, and the sum of versions (any status change bumps it)."""
    row = await pool.fetchrow(
        """SELECT (SELECT count(*) FROM requests) AS requests,
                  (SELECT coalesce(sum(version), 0) FROM requests) AS versions,
                  (SELECT count(*) FROM request_events) AS request_events,
                  (SELECT count(*) FROM outbox) AS outbox"""
    )
    return dict(row)


async def settled_state(pool: asyncpg.Pool) -> dict[str, int]:
    """The table state once the relay has drained the outbox, so only the requests under test can change it."""

    async def drained() -> dict[str, int]:
        state = await table_state(pool)
        assert state["outbox"] == 0, state
        return state

    return await assert_eventually(drained, timeout=20, message="the outbox never drained")


async def assert_still_serving(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/requests", content=VALID_BODY, headers=JSON)
    assert response.status_code == 202, response.text


@pytest.fixture
async def revoked_key(pool: asyncpg.Pool, tenant: Tenant) -> str:
    """A key of `tenant` revoked before it was ever used, so no gateway has it cached."""
    async with pool.acquire() as connection:
        new_key = await create_api_key(connection, tenant.id)
        await connection.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1", hash_api_key(new_key.key)
        )
    return new_key.key


@pytest.fixture
async def anonymous(client: httpx.AsyncClient, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the running gateway that sends no Authorization header."""
    async with api_client(settings, None) as http:
        yield http


# --- authentication ----------------------------------------------------------------------------


def v1_routes() -> list[tuple[str, str, bytes | None]]:
    """Every /v1 route, with a request that would succeed (or 404) if it were authenticated."""
    return [
        ("POST", "/v1/requests", VALID_BODY),
        ("GET", "/v1/requests", None),
        ("GET", f"/v1/requests/{NO_SUCH_ID}", None),
        ("POST", f"/v1/requests/{NO_SUCH_ID}/cancel", None),
        ("GET", f"/v1/requests/{NO_SUCH_ID}/deliveries", None),
        ("POST", f"/v1/requests/{NO_SUCH_ID}/input", b'{"name": "approval", "value": true}'),
        ("GET", "/v1/kinds", None),
    ]


async def test_every_v1_route_answers_401_with_www_authenticate_for_a_missing_or_bad_key(
    anonymous: httpx.AsyncClient,
    client: httpx.AsyncClient,
    settings: Settings,
    pool: asyncpg.Pool,
    tenant: Tenant,
    revoked_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    unknown_key = generate_api_key()[1]
    overlong_key = tenant.api_key + "x" * 300
    authorizations: dict[str, bytes | None] = {
        "no Authorization header": None,
        "Basic scheme": b"Basic dXNlcjpwYXNzd29yZA==",
        "the valid key under another scheme": f"Token {tenant.api_key}".encode(),
        "empty bearer": b"Bearer",
        "unknown key": f"Bearer {unknown_key}".encode(),
        "revoked key": f"Bearer {revoked_key}".encode(),
        "overlong key (valid key + 300 chars)": f"Bearer {overlong_key}".encode(),
        "non-ASCII key": f"Bearer {tenant.api_key[:-2]}é€".encode(),
        "8 KB bearer value": b"Bearer ak_" + b"x" * 8192,
        "key without the ak_ prefix": f"Bearer {tenant.api_key[3:]}".encode(),
    }
    keys_sent = [tenant.api_key, unknown_key, revoked_key, overlong_key]
    before = await table_state(pool)

    for name, authorization in authorizations.items():
        headers = {b"Content-Type": b"application/json"}
        if authorization is not None:
            headers[b"Authorization"] = authorization
        for method, path, content in v1_routes():
            response = await anonymous.request(method, path, content=content, headers=headers)
            case = f"{name}: {method} {path}"
            expect_problem(case, response, 401, "unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer"), case
            assert not any(secret in response.text for secret in keys_sent), f"{case} echoes a key: {response.text}"

    # Authentication comes first: a caller without a key learns nothing about its body.
    for name, content, content_type in [
        ("malformed JSON", b"{", "application/json"),
        ("empty body", b"", "application/json"),
        ("wrong media type", b"kind=echo", "application/x-www-form-urlencoded"),
    ]:
        response = await anonymous.post("/v1/requests", content=content, headers={"Content-Type": content_type})
        expect_problem(f"unauthenticated {name}", response, 401, "unauthorized")

    assert await table_state(pool) == before
    assert not any(secret in caplog.text for secret in keys_sent), "an API key reached the log"
    # RFC 9110: the auth scheme is case-insensitive, so the valid key under `bearer` works.
    response = await anonymous.get("/v1/requests", headers={"Authorization": f"bearer {tenant.api_key}"})
    assert response.status_code == 200, response.text
    await assert_still_serving(client)


async def test_a_key_revoked_after_use_stops_working_once_the_auth_cache_expires(
    client: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool, other_tenant: Tenant
) -> None:
    async with api_client(settings, other_tenant.api_key) as revoked_soon:
        assert (await revoked_soon.get("/v1/requests")).status_code == 200
        await pool.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1", hash_api_key(other_tenant.api_key)
        )

        async def refused() -> bool:
            response = await revoked_soon.get("/v1/requests")
            expect_problem("revoked after use", response, 401, "unauthorized")
            return True

        await assert_eventually(refused, timeout=settings.auth_cache_seconds + 5, message="revoked key still works")
        response = await revoked_soon.post("/v1/requests", content=VALID_BODY, headers=JSON)
        expect_problem("revoked key posting", response, 401, "unauthorized")
    assert await pool.fetchval("SELECT count(*) FROM requests WHERE tenant_id = $1", other_tenant.id) == 0
    await assert_still_serving(client)


# --- POST /v1/requests bodies --------------------------------------------------------------------


def nested(depth: int) -> bytes:
    """A payload nested `depth` levels deep, as raw JSON text (never built as a Python object)."""
    return b'{"kind": "echo", "payload": {"a": ' + b"[" * depth + b"]" * depth + b"}}"


def body_cases(max_body_bytes: int) -> list[Case]:
    malformed, invalid = "malformed-request", "invalid-input"
    too_big = b'{"kind": "echo", "payload": {"blob": "' + b"x" * max_body_bytes + b'"}}'
    cases = [
        Case("malformed JSON", 400, malformed, content=b'{"kind": "echo",'),
        Case("empty body", 400, malformed, content=b""),
        Case("whitespace-only body", 400, malformed, content=b"   \n"),
        Case("trailing garbage", 400, malformed, content=b'{"kind": "echo"} {}'),
        Case("NaN literal", 400, malformed, content=b'{"kind": "echo", "payload": {"x": NaN}}'),
        Case("number out of range", 400, malformed, content=b'{"kind": "echo", "payload": {"x": 1e400}}'),
        Case(
            "lone surrogate escape in a string",
            400,
            malformed,
            content=b'{"kind": "echo", "payload": {"x": "\\ud800"}}',
        ),
        Case("lone surrogate escape in a key", 400, malformed, content=b'{"kind": "echo", "payload": {"\\udfff": 1}}'),
        Case("invalid UTF-8 bytes", 400, malformed, content=b'{"kind": "echo", "payload": {"x": "\xff\xfe"}}'),
        Case("10,000 levels of arrays", 400, malformed, content=nested(10_000)),
        Case("10,000 levels of objects", 400, malformed, content=b'{"a": ' * 10_000 + b"1" + b"}" * 10_000),
        Case("JSON array", 422, invalid, "body", content=b'[{"kind": "echo"}]'),
        Case("JSON string", 422, invalid, "body", content=b'"echo"'),
        Case("JSON number", 422, invalid, "body", content=b"42"),
        Case("JSON null", 422, invalid, "body", content=b"null"),
        Case("missing kind", 422, invalid, "kind", content=b'{"payload": {}}'),
        Case("kind a number", 422, invalid, "kind", content=b'{"kind": 7}'),
        Case("kind null", 422, invalid, "kind", content=b'{"kind": null}'),
        Case("kind an object", 422, invalid, "kind", content=b'{"kind": {"name": "echo"}}'),
        Case("kind uppercase", 422, invalid, "kind", content=b'{"kind": "ECHO"}'),
        Case("kind with spaces", 422, invalid, "kind", content=b'{"kind": "e cho"}'),
        Case("kind empty", 422, invalid, "kind", content=b'{"kind": ""}'),
        Case("kind 300 chars", 422, invalid, "kind", content=b'{"kind": "' + b"e" * 300 + b'"}'),
        Case("kind with NUL", 422, invalid, "kind", content=b'{"kind": "echo\\u0000"}'),
        Case("kind SQL", 422, invalid, "kind", content=b'{"kind": "echo\'; DROP TABLE requests; --"}'),
        Case("kind SQL without quotes", 422, invalid, "kind", content=b'{"kind": "echo;delete from requests"}'),
        Case("unknown kind", 422, "unknown-kind", "kind", content=b'{"kind": "no-such-kind"}'),
        Case("payload an array", 422, invalid, "payload", content=b'{"kind": "echo", "payload": [1]}'),
        Case("payload a string", 422, invalid, "payload", content=b'{"kind": "echo", "payload": "x"}'),
        Case("payload null", 422, invalid, "payload", content=b'{"kind": "echo", "payload": null}'),
        Case("unknown top-level field", 422, invalid, "priority", content=b'{"kind": "echo", "priority": 9}'),
        Case("delay_seconds zero", 422, invalid, "delay_seconds", content=b'{"kind": "echo", "delay_seconds": 0}'),
        Case("delay_seconds negative", 422, invalid, "delay_seconds", content=b'{"kind": "echo", "delay_seconds": -5}'),
        Case(
            "delay_seconds over 30 days",
            422,
            invalid,
            "delay_seconds",
            content=b'{"kind": "echo", "delay_seconds": 2592001}',
        ),
        Case("delay a string", 422, invalid, "delay_seconds", content=b'{"kind": "echo", "delay_seconds": "x"}'),
        Case("run_at not a time", 422, invalid, "run_at", content=b'{"kind": "echo", "run_at": "tomorrow"}'),
        Case(
            "run_at without an offset",
            422,
            invalid,
            "run_at",
            content=b'{"kind": "echo", "run_at": "2030-01-01T00:00:00"}',
        ),
        Case(
            "run_at over 30 days ahead",
            422,
            invalid,
            "run_at",
            content=b'{"kind": "echo", "run_at": "2999-01-01T00:00:00Z"}',
        ),
        Case("ttl_seconds zero", 422, invalid, "ttl_seconds", content=b'{"kind": "echo", "ttl_seconds": 0}'),
        Case("ttl_seconds over 30 days", 422, invalid, "ttl_seconds", content=b'{"kind": "echo", "ttl_seconds": 3e6}'),
        Case(
            "expires_at without an offset",
            422,
            invalid,
            "expires_at",
            content=b'{"kind": "echo", "expires_at": "2030-01-01T00:00:00"}',
        ),
        Case(
            "expires_at in the past",
            422,
            invalid,
            "expires_at",
            content=b'{"kind": "echo", "expires_at": "2000-01-01T00:00:00Z"}',
        ),
        Case(
            "expires_at and ttl_seconds both",
            422,
            invalid,
            "ttl_seconds",
            content=b'{"kind": "echo", "expires_at": "2999-01-01T00:00:00Z", "ttl_seconds": 5}',
        ),
        Case(
            "expiry before the delayed start",
            422,
            invalid,
            "ttl_seconds",
            content=b'{"kind": "echo", "delay_seconds": 60, "ttl_seconds": 30}',
        ),
        Case(
            "run_at and delay_seconds both",
            422,
            invalid,
            "delay_seconds",
            content=b'{"kind": "echo", "run_at": "2030-01-01T00:00:00Z", "delay_seconds": 5}',
        ),
        Case(
            "concurrency_key empty", 422, invalid, "concurrency_key", content=b'{"kind": "echo", "concurrency_key": ""}'
        ),
        Case(
            "concurrency_key of 257 chars",
            422,
            invalid,
            "concurrency_key",
            content=b'{"kind": "echo", "concurrency_key": "%s"}' % (b"k" * 257),
        ),
        Case(
            "concurrency_key a number",
            422,
            invalid,
            "concurrency_key",
            content=b'{"kind": "echo", "concurrency_key": 7}',
        ),
        Case(
            "concurrency_key with NUL",
            422,
            invalid,
            "concurrency_key",
            content=b'{"kind": "echo", "concurrency_key": "a\\u0000b"}',
        ),
        Case(
            "concurrency_limit zero",
            422,
            invalid,
            "concurrency_limit",
            content=b'{"kind": "echo", "concurrency_key": "k", "concurrency_limit": 0}',
        ),
        Case(
            "concurrency_limit huge",
            422,
            invalid,
            "concurrency_limit",
            content=b'{"kind": "echo", "concurrency_key": "k", "concurrency_limit": 10001}',
        ),
        Case(
            "concurrency_limit without a key",
            422,
            invalid,
            "concurrency_limit",
            content=b'{"kind": "echo", "concurrency_limit": 2}',
        ),
        Case(
            "concurrency_policy unknown",
            422,
            invalid,
            "concurrency_policy",
            content=b'{"kind": "echo", "concurrency_key": "k", "concurrency_policy": "drop"}',
        ),
        Case(
            "concurrency_policy without a key",
            422,
            invalid,
            "concurrency_policy",
            content=b'{"kind": "echo", "concurrency_policy": "skip"}',
        ),
        Case("priority zero", 422, invalid, "priority", content=b'{"kind": "echo", "priority": 0}'),
        Case("priority six", 422, invalid, "priority", content=b'{"kind": "echo", "priority": 6}'),
        Case("priority a string", 422, invalid, "priority", content=b'{"kind": "echo", "priority": "high"}'),
        Case("priority a fraction", 422, invalid, "priority", content=b'{"kind": "echo", "priority": 2.5}'),
        Case("tags not a list", 422, invalid, "tags", content=b'{"kind": "echo", "tags": "a"}'),
        Case(
            "eleven tags",
            422,
            invalid,
            "tags",
            content=b'{"kind": "echo", "tags": ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9", "t10"]}',
        ),
        Case("a tag with a space", 422, invalid, "tags[0]", content=b'{"kind": "echo", "tags": ["a b"]}'),
        Case("an empty tag", 422, invalid, "tags[0]", content=b'{"kind": "echo", "tags": [""]}'),
        Case(
            "a tag of 65 chars",
            422,
            invalid,
            "tags[0]",
            content=b'{"kind": "echo", "tags": ["%s"]}' % (b"t" * 65),
        ),
        Case("a tag twice", 422, invalid, "tags", content=b'{"kind": "echo", "tags": ["a", "a"]}'),
        Case(
            "NUL in a payload string",
            422,
            invalid,
            "payload",
            content=b'{"kind": "echo", "payload": {"x": "a\\u0000b"}}',
        ),
        Case("NUL in a payload key", 422, invalid, "payload", content=b'{"kind": "echo", "payload": {"\\u0000": 1}}'),
        Case(
            "NUL deep in the payload",
            422,
            invalid,
            "payload",
            content=b'{"kind": "echo", "payload": {"a": [{"b": "\\u0000"}]}}',
        ),
        Case("body of max_body_bytes + 1", 413, "payload-too-large", content=b" " * (max_body_bytes + 1)),
        Case("body far over the limit", 413, "payload-too-large", content=too_big),
    ]
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
    ]:
        cases.append(
            Case(
                f"Content-Type {content_type}",
                415,
                "unsupported-media-type",
                content=VALID_BODY,
                headers={"Content-Type": content_type},
            )
        )
    return cases


async def test_bad_request_bodies_get_a_4xx_problem_naming_the_field_and_write_nothing(
    client: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool
) -> None:
    before = await table_state(pool)

    await check_cases(client, body_cases(settings.max_body_bytes))

    assert await table_state(pool) == before
    await assert_still_serving(client)


async def test_body_size_limit_is_exact_and_holds_without_content_length(
    client: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"kind": "echo", "payload": {"blob": "'
        for _ in range(settings.max_body_bytes // 65536 + 1):
            yield b"x" * 65536
        yield b'"}}'

    before = await table_state(pool)
    streamed = await client.post("/v1/requests", content=chunks(), headers=JSON)  # chunked: no Content-Length
    expect_problem("chunked body over the limit", streamed, 413, "payload-too-large")
    assert await table_state(pool) == before

    at_limit = VALID_BODY + b" " * (settings.max_body_bytes - len(VALID_BODY))
    assert (await client.post("/v1/requests", content=at_limit, headers=JSON)).status_code == 202


async def test_a_json_body_is_accepted_with_a_json_media_type_or_none(client: httpx.AsyncClient) -> None:
    for headers in [
        {},
        {"Content-Type": "application/json; charset=utf-8"},
        {"Content-Type": "application/vnd.x+json"},
    ]:
        response = await client.post("/v1/requests", content=VALID_BODY, headers=headers)
        assert response.status_code == 202, (headers, response.text)


async def test_hostile_but_valid_strings_are_stored_and_returned_verbatim(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    payload = {
        "sql": "'; DROP TABLE requests; --",
        "sql2": '" OR 1=1 --',
        "$1": "$2::jsonb",
        "astral": "\U0001f986",
        "bidi and zero-width": "\u202eabc\u200b\ufeff",
        "line separators": "\u2028\u2029\r\n",
        "escaped backslash-u0000 text": "\\u0000",
        "html": "<script>alert(1)</script>",
    }
    response = await client.post(
        "/v1/requests",
        content=b'{"kind": "echo", "payload": {"pair": "\\ud83e\\udd86"}}',
        headers={**JSON, "X-Long-Header": "y" * 8192},
    )
    assert response.status_code == 202, response.text
    pair = await wait_for_status(client, response.json()["id"], {"DONE"})
    assert pair["result"] == {"pair": "\U0001f986"}

    response = await client.post("/v1/requests", json={"kind": "echo", "payload": payload})

    assert response.status_code == 202, response.text
    done = await wait_for_status(client, response.json()["id"], {"DONE"})
    assert done["payload"] == payload and done["result"] == payload
    assert await pool.fetchval("SELECT count(*) FROM requests") == 2


# --- GET /v1/requests/{id} and POST /v1/requests/{id}/cancel --------------------------------------


async def test_malformed_missing_and_foreign_ids_are_404_on_read_cancel_and_deliveries_and_change_nothing(
    client: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool, other_tenant: Tenant
) -> None:
    accepted = (await client.post("/v1/requests", content=VALID_BODY, headers=JSON)).json()
    mine = accepted["id"]
    await wait_for_status(client, mine, {"DONE"})
    before = await settled_state(pool)

    cases = []
    for bad_id in ["not-a-uuid", "1", "a" * 2000, NO_SUCH_ID[:-1] + "g", f"{NO_SUCH_ID}0", "%00", "..%2f..%2fetc"]:
        cases.append(Case(f"GET id {bad_id[:40]}", 404, "not-found", method="GET", path=f"/v1/requests/{bad_id}"))
        cases.append(Case(f"cancel id {bad_id[:40]}", 404, "not-found", path=f"/v1/requests/{bad_id}/cancel"))
        deliveries = f"/v1/requests/{bad_id}/deliveries"
        cases.append(Case(f"deliveries of id {bad_id[:40]}", 404, "not-found", method="GET", path=deliveries))
    await check_cases(client, cases)

    missing_read = expect_problem("missing read", await client.get(f"/v1/requests/{NO_SUCH_ID}"), 404, "not-found")
    missing_cancel = expect_problem(
        "missing cancel", await client.post(f"/v1/requests/{NO_SUCH_ID}/cancel"), 404, "not-found"
    )
    missing_deliveries = expect_problem(
        "missing deliveries", await client.get(f"/v1/requests/{NO_SUCH_ID}/deliveries"), 404, "not-found"
    )
    async with api_client(settings, other_tenant.api_key) as intruder:
        foreign_read = expect_problem("foreign read", await intruder.get(f"/v1/requests/{mine}"), 404, "not-found")
        foreign_deliveries = expect_problem(
            "foreign deliveries", await intruder.get(f"/v1/requests/{mine}/deliveries"), 404, "not-found"
        )
        foreign_cancel = expect_problem(
            "foreign cancel", await intruder.post(f"/v1/requests/{mine}/cancel"), 404, "not-found"
        )

    # Another tenant's request is indistinguishable from one that does not exist.
    def shape(body: dict[str, Any], request_id: str) -> str:
        return str({key: str(value).replace(request_id, "<id>") for key, value in body.items()})

    assert shape(foreign_read, mine) == shape(missing_read, NO_SUCH_ID)
    assert shape(foreign_cancel, mine) == shape(missing_cancel, NO_SUCH_ID)
    assert shape(foreign_deliveries, mine) == shape(missing_deliveries, NO_SUCH_ID)
    for bad in ({"limit": "0"}, {"limit": "abc"}, {"cursor": "!!!"}):
        response = await client.get(f"/v1/requests/{mine}/deliveries", params=bad)
        expect_problem(f"deliveries {bad}", response, 400, None)
    assert await table_state(pool) == before
    assert (await client.get(f"/v1/requests/{mine}")).json()["status"] == "DONE"
    await assert_still_serving(client)


# --- GET /v1/requests ----------------------------------------------------------------------------


def list_cases() -> list[Case]:
    bad = {
        "status": ["DONEE", "done", "", "INIT' OR '1'='1", "\x00"],
        "limit": ["0", "-1", "10000", "abc", "", "1.5", "99999999999999999999999"],
        "cursor": ["!!!", "AAAA", "not base64 at all", "\x00", "x" * 5000, "A" * 20],  # 15 bytes, not 16
        "kind": ["ECHO", "", "k" * 300, "\x00", "echo' OR '1'='1"],
        "tag": ["", "a b", "\x00", "t" * 65, "-leading"],
        "concurrency_key": ["", "\x00", "k" * 257],
    }
    return [
        Case(f"{name}={value[:30]!r}", 400, None, name, method="GET", params={name: value}, headers={})
        for name, values in bad.items()
        for value in values
    ]


async def test_bad_list_filters_get_a_400_naming_the_parameter(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    before = await table_state(pool)

    await check_cases(client, list_cases())

    assert await table_state(pool) == before
    valid = await client.get("/v1/requests", params={"status": "DONE", "kind": "echo", "limit": "200"})
    assert valid.status_code == 200 and valid.json() == {"items": [], "next_cursor": None}
    await assert_still_serving(client)


# --- methods, paths, health, OpenAPI --------------------------------------------------------------


async def test_wrong_methods_are_405_and_unknown_paths_404_as_problems_on_every_route(
    client: httpx.AsyncClient, anonymous: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    routes = {
        "/v1/requests": {"GET", "POST"},
        f"/v1/requests/{NO_SUCH_ID}": {"GET"},
        f"/v1/requests/{NO_SUCH_ID}/cancel": {"POST"},
        f"/v1/requests/{NO_SUCH_ID}/deliveries": {"GET"},
        "/health/live": {"GET"},
        "/health/ready": {"GET"},
        "/schema/openapi.json": {"GET"},
    }
    before = await table_state(pool)
    for http in (client, anonymous):
        for path, allowed in routes.items():
            for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - allowed):
                response = await http.request(method, path, content=VALID_BODY, headers=JSON)
                expect_problem(f"{method} {path}", response, 405, "method-not-allowed")
                assert allowed <= {m.strip() for m in response.headers["allow"].split(",")}, (method, path)
        for path in [
            "/nope",
            "/v1",
            "/v1/nope",
            "/v2/requests",
            f"/v1/requests/{NO_SUCH_ID}/nope",
            "/health",
            "/schema/nope",
            "/schema/openapi.yaml.bak",
        ]:
            expect_problem(f"GET {path}", await http.get(path), 404, "not-found")
    assert await table_state(pool) == before

    for path in ["/health/live", "/health/ready", "/schema/openapi.json", "/schema"]:
        response = await anonymous.get(path, params={"verbose": "1", "x": "\x00\xff" * 100})
        assert response.status_code == 200, (path, response.text)
    await assert_still_serving(client)


# --- text fields and digit strings: what Postgres and int() cannot take ------------------------------


def text_field_cases(endpoint_id: str) -> list[Case]:
    """A NUL (Postgres error 22021), a control character, or a host that is no host name, in every
    text field a client sends: each a 422 naming the field."""
    invalid, unsafe = "invalid-input", "unsafe-url"
    urls = {
        "NUL in the path": ("http://127.0.0.1:9/a\u0000b", invalid),
        "NUL in the host": ("http://127.0.0.\u00001:9/", invalid),
        "a control character": ("http://127.0.0.1:9/a\u0001b", unsafe),
        "CR LF": ("http://127.0.0.1:9/a\r\nX-Injected: 1", unsafe),
        "an empty label": ("http://a..example/", unsafe),
        "a 64-character label": (f"http://{'x' * 64}.example/", unsafe),
    }
    cases = []
    for name, (url, slug) in urls.items():
        cases += [
            Case(
                f"callback_url with {name}",
                422,
                slug,
                "callback_url",
                content=_json({"kind": "echo", "callback_url": url}),
            ),
            Case(
                f"endpoint url with {name}",
                422,
                slug,
                "url",
                path="/v1/webhooks",
                content=_json({"url": url, "event_types": ["request.*"]}),
            ),
            Case(
                f"new url with {name}",
                422,
                slug,
                "url",
                method="PATCH",
                path=f"/v1/webhooks/{endpoint_id}",
                content=_json({"url": url}),
            ),
        ]
    description = {"url": "http://127.0.0.1:9/hook", "event_types": ["request.*"], "description": "a\u0000b"}
    cases += [
        Case("description with NUL", 422, invalid, "description", path="/v1/webhooks", content=_json(description)),
        Case(
            "new description with NUL",
            422,
            invalid,
            "description",
            method="PATCH",
            path=f"/v1/webhooks/{endpoint_id}",
            content=_json({"description": "\u0000"}),
        ),
    ]
    return cases


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


async def endpoint_state(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return [dict(row) for row in await pool.fetch("SELECT * FROM webhook_endpoints ORDER BY id")]


async def test_nul_control_characters_and_bad_host_names_in_text_fields_are_a_422_and_write_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    created = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "event_types": ["request.*"]})
    assert created.status_code == 201, created.text
    before, endpoints = await settled_state(pool), await endpoint_state(pool)

    await check_cases(client, text_field_cases(created.json()["id"]))

    assert await table_state(pool) == before
    assert await endpoint_state(pool) == endpoints
    await assert_still_serving(client)


async def test_non_ascii_digits_in_last_event_id_and_capability_tokens_are_refused_not_500(
    client: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool
) -> None:
    accepted = (await client.post("/v1/requests", content=VALID_BODY, headers=JSON)).json()
    await wait_for_status(client, accepted["id"], {"DONE"})
    before = await settled_state(pool)
    streams = [f"/v1/requests/{accepted['id']}/events", "/v1/events"]
    # Header bytes arrive as Latin-1: \xb2 is '²' and \xb9 '¹', for which str.isdigit() is true.
    header_values = [b"\xb2", b"1\xb9", b"\xb9\xb2\xb3", b"1_000", b"+5", b"-1", b"9" * 20, b"12 34"]
    failures = []
    for path in streams:
        for raw in header_values:
            response = await client.get(path, headers={b"Last-Event-ID": raw})
            try:
                expect_problem(f"Last-Event-ID {raw!r} on {path}", response, 400, None, "Last-Event-ID")
            except AssertionError as exc:
                failures.append(str(exc)[:300])
        # The query form (percent-encoded UTF-8); \u0661\u0662 is Arabic-Indic 12.
        for value in ["²", "\u0661\u0662", "1_000"]:
            response = await client.get(path, params={"last_event_id": value})
            try:
                expect_problem(f"last_event_id={value!r} on {path}", response, 400, None, "last_event_id")
            except AssertionError as exc:
                failures.append(str(exc)[:300])

    tenant_part, key_part, _, signature = accepted["links"]["events"].split("token=")[1].split(".")
    async with api_client(settings, None) as anonymous:
        for expiry in ["²", "¹²³⁴⁵⁶⁷⁸⁹⁰", "\u0661\u0667" + "\u0660" * 8, "1_700_000_000", "+1700000000", "9" * 30]:
            token = f"{tenant_part}.{key_part}.{expiry}.{signature}"
            response = await anonymous.get(streams[0], params={"token": token})
            try:
                expect_problem(f"token expiry {expiry!r}", response, 401, "unauthorized")
            except AssertionError as exc:
                failures.append(str(exc)[:300])
    assert not failures, "\n".join(failures)

    assert await table_state(pool) == before
    await assert_still_serving(client)


async def test_an_internal_webhook_url_is_refused_without_naming_the_address_it_resolves_to(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    strict = replace(settings, webhook_allow_private=False)  # as deployed
    async with (
        running_roles(strict, pool, redis, temporal, registry, relay=False, worker=False),
        api_client(strict, tenant.api_key) as http,
    ):
        created = uuid.uuid4()  # an endpoint registered back when private targets were allowed
        await pool.fetchrow(
            sql("create_endpoint"), created, tenant.id, "http://127.0.0.1:9/", "", ["request.*"], 10, None, "whsec_x"
        )
        before = await endpoint_state(pool)
        # Names for 127.0.0.1 that are not the literal address: only the resolver knows where they lead.
        for url in ["http://127.1/hook", "http://2130706433/hook", "http://0x7f000001/hook"]:
            for case, response in [
                (f"register {url}", await http.post("/v1/webhooks", json={"url": url, "event_types": ["request.*"]})),
                (f"patch to {url}", await http.patch(f"/v1/webhooks/{created}", json={"url": url})),
                (f"callback_url {url}", await http.post("/v1/requests", json={"kind": "echo", "callback_url": url})),
            ]:
                expect_problem(case, response, 422, "unsafe-url")
                assert "127.0.0.1" not in response.text, f"{case} names the address: {response.text}"
        assert await endpoint_state(pool) == before
        assert await pool.fetchval("SELECT count(*) FROM requests") == 0
