"""The webhook API's edges end to end: SSRF refusals in production mode, tenant isolation, and
hostile input on every webhook and delivery route (a clear 4xx problem+json, nothing written).
"""

from __future__ import annotations

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
from ackflow.webhook_secrets import new_webhook_secret
from callbacks import WebhookSender
from tests.conftest import Tenant, api_client
from tests.e2e.conftest import webhook_stack
from tests.e2e.test_webhooks import register, send_test, wait_delivery
from tests.helpers import assert_problem
from tests.receiver import Receiver

NO_SUCH_ID = "00000000-0000-4000-8000-000000000000"
INTERNAL_URLS = ("http://127.0.0.1/x", "http://169.254.169.254/latest", "http://10.0.0.1/", "http://localhost:8080/")
WEBHOOK_TABLES = ("webhook_endpoints", "webhook_secrets", "webhook_deliveries", "webhook_attempts", "requests")


pytestmark = pytest.mark.usefixtures("no_gateway_errors_logged")


@pytest.fixture
async def production(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> AsyncIterator[httpx.AsyncClient]:
    """The whole stack as deployed: webhooks to internal addresses are refused."""
    strict = replace(settings, webhook_allow_private=False)
    async with webhook_stack(strict, pool, redis, temporal, registry, tenant.api_key) as client:
        yield client


async def row_counts(pool: asyncpg.Pool) -> dict[str, int]:
    return {table: await pool.fetchval(f"SELECT count(*) FROM {table}") for table in WEBHOOK_TABLES}


def expect_problem(case: str, response: httpx.Response, status: int, slug: str | None, field: str | None) -> None:
    """assert_problem, naming the case; with `field`, the problem's `errors` must name that field."""
    try:
        body = assert_problem(response, status, slug)
    except (AssertionError, KeyError, ValueError) as exc:
        raise AssertionError(f"{case}: {exc!r}"[:400]) from None
    if field is not None:  # the field itself, or an element of it (`event_types[0]`)
        named = [str(error.get("field")).partition("[")[0] for error in body.get("errors") or []]
        assert field in named, f"{case}: errors should name {field!r}: {body}"


# --- SSRF ----------------------------------------------------------------------------------------


async def test_production_mode_refuses_internal_urls_on_register_update_and_callback_url_and_writes_nothing(
    production: httpx.AsyncClient, receiver: Receiver, pool: asyncpg.Pool, tenant: Tenant
) -> None:
    # An endpoint registered back when private targets were allowed (a development database, say).
    legacy_id = await _insert_endpoint(pool, tenant, receiver.url())
    legacy_before = (await production.get(f"/v1/webhooks/{legacy_id}")).json()
    before = await row_counts(pool)

    failures = []
    for url in INTERNAL_URLS:
        for case, response in [
            (f"register {url}", await production.post("/v1/webhooks", json={"url": url, "event_types": ["request.*"]})),
            (f"patch to {url}", await production.patch(f"/v1/webhooks/{legacy_id}", json={"url": url})),
            (f"callback_url {url}", await production.post("/v1/requests", json={"kind": "echo", "callback_url": url})),
        ]:
            try:
                expect_problem(case, response, 422, "unsafe-url", "url" if "callback" not in case else None)
            except AssertionError as exc:
                failures.append(str(exc))
    assert not failures, "\n".join(failures)

    assert await row_counts(pool) == before
    assert (await production.get(f"/v1/webhooks/{legacy_id}")).json() == legacy_before


async def test_production_mode_refuses_at_send_time_an_endpoint_registered_while_private_targets_were_allowed(
    production: httpx.AsyncClient, receiver: Receiver, pool: asyncpg.Pool, tenant: Tenant
) -> None:
    legacy_id = await _insert_endpoint(pool, tenant, receiver.url())

    detail = await wait_delivery(production, await send_test(production, legacy_id), "failed", attempts=1)

    [attempt] = detail["attempt_log"]
    assert attempt["status_code"] is None and attempt["error"].startswith("refused"), attempt
    assert receiver.received == []


async def test_a_production_sender_refuses_a_loopback_target_without_connecting_to_it(receiver: Receiver) -> None:
    secrets = [new_webhook_secret()]
    async with httpx.AsyncHTTPTransport() as transport:
        refused = await WebhookSender(transport, allow_private=False).send(receiver.url(), "msg_1", "{}", secrets)
        assert refused.error is not None and refused.error.startswith("refused"), refused
        assert refused.status_code is None and not refused.succeeded
        assert receiver.received == []

        allowed = await WebhookSender(transport, allow_private=True).send(receiver.url(), "msg_2", "{}", secrets)
    assert allowed.succeeded and [r.webhook_id for r in receiver.received] == ["msg_2"]


async def _insert_endpoint(pool: asyncpg.Pool, tenant: Tenant, url: str) -> str:
    endpoint_id = uuid.uuid4()
    await pool.fetchrow(
        sql("create_endpoint"), endpoint_id, tenant.id, url, "", ["request.done"], 10, None, new_webhook_secret()
    )
    return str(endpoint_id)


# --- tenant isolation ----------------------------------------------------------------------------


async def test_another_tenant_gets_404_for_every_route_on_a_tenants_endpoint_and_delivery_and_changes_nothing(
    http: httpx.AsyncClient, receiver: Receiver, pool: asyncpg.Pool, settings: Settings, other_tenant: Tenant
) -> None:
    endpoint = await register(http, receiver.url(), ["request.done"])
    endpoint_id = endpoint["id"]
    receiver.reply_with(500)
    failed = await send_test(http, endpoint_id)
    await wait_delivery(http, failed, "failed", attempts=1)
    succeeded = await send_test(http, endpoint_id)
    await wait_delivery(http, succeeded, "succeeded", attempts=1)
    before = await _tenant_view(http, pool, endpoint_id, [failed, succeeded])
    tenant_secret = (await http.get("/v1/webhooks/signing-secret")).json()["secret"]

    async with api_client(settings, other_tenant.api_key) as intruder:
        attempts = [
            ("GET", f"/v1/webhooks/{endpoint_id}", None),
            ("PATCH", f"/v1/webhooks/{endpoint_id}", {"url": "http://127.0.0.1:1/stolen", "enabled": False}),
            ("DELETE", f"/v1/webhooks/{endpoint_id}", None),
            ("POST", f"/v1/webhooks/{endpoint_id}/rotate-secret", None),
            ("POST", f"/v1/webhooks/{endpoint_id}/test", None),
            ("GET", f"/v1/webhooks/{endpoint_id}/deliveries", None),
            ("POST", f"/v1/webhooks/{endpoint_id}/recover", {"since": "2000-01-01T00:00:00Z"}),
            ("GET", f"/v1/deliveries/{failed}", None),
            ("POST", f"/v1/deliveries/{failed}/retry", None),
            ("POST", f"/v1/deliveries/{succeeded}/retry", None),
        ]
        for method, path, body in attempts:
            response = await intruder.request(method, path, json=body)
            expect_problem(f"{method} {path}", response, 404, "not-found", None)
            assert receiver.url() not in response.text and "whsec_" not in response.text, response.text
        listed = await intruder.get("/v1/webhooks")
        assert listed.status_code == 200 and listed.json()["items"] == []
        assert (await intruder.get("/v1/webhooks/signing-secret")).json()["secret"] != tenant_secret

    assert await _tenant_view(http, pool, endpoint_id, [failed, succeeded]) == before
    assert len(receiver.received) == 2, "the intruder made something be sent"
    await wait_delivery(http, await send_test(http, endpoint_id), "succeeded")
    assert len(receiver.received[-1].headers["webhook-signature"].split(" ")) == 1, "the secret was rotated"
    assert receiver.received[-1].verify(endpoint["secret"])["type"] == "webhook.test"


async def _tenant_view(http: httpx.AsyncClient, pool: asyncpg.Pool, endpoint_id: str, deliveries: list[str]) -> Any:
    return (
        (await http.get(f"/v1/webhooks/{endpoint_id}")).json(),
        (await http.get(f"/v1/webhooks/{endpoint_id}/deliveries")).json(),
        [(await http.get(f"/v1/deliveries/{d}")).json() for d in deliveries],
        await row_counts(pool),
    )


# --- hostile input -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile request and the problem it must get."""

    method: str
    path: str
    status: int
    slug: str | None = None
    field: str | None = None
    content: bytes | None = None
    params: dict[str, str] | None = None
    content_type: str = "application/json"


def body_cases(endpoint: str) -> list[Case]:
    """Malformed and invalid bodies for POST /v1/webhooks, PATCH /v1/webhooks/{id} and .../recover."""
    good = b'"url": "http://127.0.0.1:9/x", "event_types": ["request.done"]'
    create = [
        (b'{"url": ', 400, "malformed-request", None),
        (b"", 400, "malformed-request", None),
        (b'{"url": "http://127.0.0.1:9/x", "event_types": ["request.done"], "secret": "mine"}', 422, None, "secret"),
        (b'{"url": 42, "event_types": ["request.done"]}', 422, "invalid-input", "url"),
        (b'{"event_types": ["request.done"]}', 422, "invalid-input", "url"),
        (b'{"url": "http://127.0.0.1:9/x", "event_types": "request.done"}', 422, "invalid-input", "event_types"),
        (b'{"url": "http://127.0.0.1:9/x", "event_types": ["request.bogus"]}', 422, "invalid-input", "event_types"),
        (b'{"url": "http://127.0.0.1:9/x", "event_types": []}', 422, "invalid-input", "event_types"),
        (b'{"url": "http://127.0.0.1:9/%s", "event_types": ["request.done"]}' % (b"a" * 3000), 422, None, "url"),
        (b'{"url": "ftp://127.0.0.1/x", "event_types": ["request.done"]}', 422, "unsafe-url", "url"),
        (b'{"url": "not a url", "event_types": ["request.done"]}', 422, "unsafe-url", "url"),
        (b"{" + good + b', "max_concurrency": 0}', 422, "invalid-input", "max_concurrency"),
        (b"{" + good + b', "max_concurrency": "two"}', 422, "invalid-input", "max_concurrency"),
        (b"{" + good + b', "rate_limit_per_second": 0}', 422, "invalid-input", "rate_limit_per_second"),
        (b"{" + good + b', "description": "' + b"d" * 501 + b'"}', 422, "invalid-input", "description"),
        (b"[]", 422, "invalid-input", None),
    ]
    update = [
        (b'{"enabled": ', 400, "malformed-request", None),
        (b"", 400, "malformed-request", None),
        (b'{"secret": "mine"}', 422, "invalid-input", "secret"),
        (b'{"enabled": "yes"}', 422, "invalid-input", "enabled"),
        (b'{"event_types": []}', 422, "invalid-input", "event_types"),
        (b'{"event_types": ["request.bogus"]}', 422, "invalid-input", "event_types"),
        (b'{"url": null}', 422, "invalid-input", "url"),
        (b'{"url": "http://127.0.0.1:9/%s"}' % (b"a" * 3000), 422, None, "url"),
        (b'{"url": "ftp://127.0.0.1/x"}', 422, "unsafe-url", "url"),
        (b'{"max_concurrency": 0}', 422, "invalid-input", "max_concurrency"),
        (b'{"rate_limit_per_second": 0}', 422, "invalid-input", "rate_limit_per_second"),
    ]
    recover = [
        (b'{"since": ', 400, "malformed-request", None),
        (b"{}", 422, "invalid-input", "since"),
        (b'{"since": "yesterday"}', 422, "invalid-input", "since"),
        (b'{"since": "2024-01-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"}', 422, "invalid-input", "until"),
    ]
    return [
        *(Case("POST", "/v1/webhooks", s, slug, f, content=c) for c, s, slug, f in create),
        *(Case("PATCH", f"/v1/webhooks/{endpoint}", s, slug, f, content=c) for c, s, slug, f in update),
        *(Case("POST", f"/v1/webhooks/{endpoint}/recover", s, slug, f, content=c) for c, s, slug, f in recover),
        Case("POST", "/v1/webhooks", 415, content=b"url=x", content_type="application/x-www-form-urlencoded"),
        Case("GET", f"/v1/webhooks/{endpoint}/deliveries", 400, None, "status", params={"status": "bogus"}),
        Case("GET", f"/v1/webhooks/{endpoint}/deliveries", 400, None, "limit", params={"limit": "0"}),
        Case("GET", f"/v1/webhooks/{endpoint}/deliveries", 400, None, "cursor", params={"cursor": "%%%"}),
        Case("GET", "/v1/webhooks", 400, None, "limit", params={"limit": "abc"}),
    ]


def route_cases(endpoint: str, delivery: str) -> list[Case]:
    """Unknown ids (404) and wrong methods (405) on every webhook and delivery route."""
    valid_patch, valid_recover = b'{"enabled": true}', b'{"since": "2024-01-01T00:00:00Z"}'
    unknown = [
        Case("GET", f"/v1/webhooks/{NO_SUCH_ID}", 404, "not-found"),
        Case("PATCH", f"/v1/webhooks/{NO_SUCH_ID}", 404, "not-found", content=valid_patch),
        Case("DELETE", f"/v1/webhooks/{NO_SUCH_ID}", 404, "not-found"),
        Case("POST", f"/v1/webhooks/{NO_SUCH_ID}/rotate-secret", 404, "not-found"),
        Case("POST", f"/v1/webhooks/{NO_SUCH_ID}/test", 404, "not-found"),
        Case("GET", f"/v1/webhooks/{NO_SUCH_ID}/deliveries", 404, "not-found"),
        Case("POST", f"/v1/webhooks/{NO_SUCH_ID}/recover", 404, "not-found", content=valid_recover),
        Case("GET", f"/v1/deliveries/{NO_SUCH_ID}", 404, "not-found"),
        Case("POST", f"/v1/deliveries/{NO_SUCH_ID}/retry", 404, "not-found"),
        Case("GET", "/v1/webhooks/not-a-uuid", 404, "not-found"),
        Case("GET", "/v1/deliveries/not-a-uuid", 404, "not-found"),
    ]
    wrong_method = [
        Case("PUT", f"/v1/webhooks/{endpoint}", 405, content=valid_patch),
        Case("DELETE", "/v1/webhooks", 405),
        Case("GET", f"/v1/webhooks/{endpoint}/test", 405),
        Case("GET", f"/v1/webhooks/{endpoint}/rotate-secret", 405),
        Case("GET", f"/v1/webhooks/{endpoint}/recover", 405),
        Case("POST", "/v1/webhooks/signing-secret", 405),
        Case("DELETE", f"/v1/deliveries/{delivery}", 405),
        Case("GET", f"/v1/deliveries/{delivery}/retry", 405),
    ]
    return unknown + [replace(c, slug="method-not-allowed") for c in wrong_method]


def unauthenticated_cases(endpoint: str, delivery: str) -> list[Case]:
    """Every webhook and delivery route, with a request that would succeed if it carried the key."""
    routes = [
        ("POST", "/v1/webhooks", b'{"url": "http://127.0.0.1:9/x", "event_types": ["request.done"]}'),
        ("GET", "/v1/webhooks", None),
        ("GET", "/v1/webhooks/signing-secret", None),
        ("GET", f"/v1/webhooks/{endpoint}", None),
        ("PATCH", f"/v1/webhooks/{endpoint}", b'{"enabled": false}'),
        ("DELETE", f"/v1/webhooks/{endpoint}", None),
        ("POST", f"/v1/webhooks/{endpoint}/rotate-secret", None),
        ("POST", f"/v1/webhooks/{endpoint}/test", None),
        ("GET", f"/v1/webhooks/{endpoint}/deliveries", None),
        ("POST", f"/v1/webhooks/{endpoint}/recover", b'{"since": "2000-01-01T00:00:00Z"}'),
        ("GET", f"/v1/deliveries/{delivery}", None),
        ("POST", f"/v1/deliveries/{delivery}/retry", None),
        ("POST", "/v1/webhooks", b'{"url": '),  # authentication comes before the body
    ]
    return [Case(method, path, 401, "unauthorized", content=content) for method, path, content in routes]


async def check_cases(http: httpx.AsyncClient, cases: list[Case]) -> None:
    """Send every case, then fail once listing each case that did not get its problem."""
    failures = []
    for case in cases:
        response = await http.request(
            case.method,
            case.path,
            content=case.content,
            params=case.params,
            headers={"Content-Type": case.content_type},
        )
        name = f"{case.method} {case.path[:60]} {(case.content or b'')[:70]!r} {case.params or ''}"
        try:
            expect_problem(name, response, case.status, case.slug, case.field)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join([f"{len(failures)} of {len(cases)} cases failed:", *failures])


async def test_bad_input_on_webhook_routes_gets_a_4xx_problem_naming_the_field_and_writes_nothing(
    http: httpx.AsyncClient, receiver: Receiver, pool: asyncpg.Pool, settings: Settings
) -> None:
    endpoint = await register(http, receiver.url(), ["request.done"])
    delivery_id = await send_test(http, endpoint["id"])
    await wait_delivery(http, delivery_id, "succeeded")
    before = await _tenant_view(http, pool, endpoint["id"], [delivery_id])

    await check_cases(http, body_cases(endpoint["id"]) + route_cases(endpoint["id"], delivery_id))
    async with api_client(settings, None) as anonymous:
        await check_cases(anonymous, unauthenticated_cases(endpoint["id"], delivery_id))

    assert await _tenant_view(http, pool, endpoint["id"], [delivery_id]) == before
    assert len(receiver.received) == 1
    assert (await http.get("/v1/webhooks")).json()["items"][0]["id"] == endpoint["id"], "still serving"
