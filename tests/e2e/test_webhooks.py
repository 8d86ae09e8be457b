"""Partner webhooks end to end: register, receive verified events, retries, rotation, replay,
endpoint health, per-request callback URLs, per-endpoint limits, and a worker stopped mid-attempt.

Every test runs the real stack (Postgres, Redis, Temporal, gateway, relay, worker) with a retry
schedule of fractions of a second, against a real loopback receiver (tests/receiver.py).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from standardwebhooks.webhooks import WebhookVerificationError
from temporalio.client import Client

from ackflow.handlers import HandlerRegistry
from ackflow.settings import Settings
from ackflow.webhook_secrets import new_webhook_secret
from tests.conftest import Tenant, api_client, running_roles
from tests.e2e.conftest import FAST_SCHEDULE
from tests.helpers import assert_eventually, assert_problem, wait_for_status
from tests.receiver import Receiver, Reply, running_receiver


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


async def _deliveries(
    http: httpx.AsyncClient, endpoint_id: str, state: str, *, event_type: str | None = None
) -> list[dict[str, Any]]:
    page = (await http.get(f"/v1/webhooks/{endpoint_id}/deliveries", params={"status": state})).json()
    return [d for d in page["items"] if event_type in (None, d["event_type"])]


# --- helpers -----------------------------------------------------------------------------------


async def send_test(http: httpx.AsyncClient, endpoint_id: str) -> str:
    """POST /v1/webhooks/{id}/test; the new delivery's id."""
    response = await http.post(f"/v1/webhooks/{endpoint_id}/test")
    assert response.status_code == 202, response.text
    delivery_id = str(response.json()["delivery_id"])
    assert response.headers["location"] == f"/v1/deliveries/{delivery_id}"
    return delivery_id


async def delivery(http: httpx.AsyncClient, delivery_id: str) -> dict[str, Any]:
    response = await http.get(f"/v1/deliveries/{delivery_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def wait_delivery(
    http: httpx.AsyncClient, delivery_id: str, state: str, *, attempts: int | None = None, timeout: float = 15
) -> dict[str, Any]:
    """The delivery once it is in `state` (with `attempts` attempts logged, if given)."""

    async def probe() -> dict[str, Any]:
        detail = await delivery(http, delivery_id)
        logged = len(detail["attempt_log"])
        assert detail["state"] == state and attempts in (None, logged), (detail["state"], logged)
        return detail

    return await assert_eventually(probe, timeout=timeout, message=f"delivery {delivery_id} never {state}")


async def _received(receiver: Receiver, expected: int) -> bool:
    assert len(receiver.received) <= expected, f"the receiver got {len(receiver.received)}, more than {expected}"
    return len(receiver.received) == expected


async def _endpoint_deliveries(pool: asyncpg.Pool, endpoint_id: str) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT id, event_type, state, request_id FROM webhook_deliveries"
            " WHERE endpoint_id = $1 ORDER BY created_at",
            uuid.UUID(endpoint_id),
        )
    )


# --- secrets, test sends, resends ----------------------------------------------------------------


async def test_after_a_secret_rotation_a_delivery_verifies_with_both_the_old_and_the_new_secret(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await register(http, receiver.url(), ["request.done"])

    rotated = await http.post(f"/v1/webhooks/{endpoint['id']}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != endpoint["secret"]
    assert "secret" not in (await http.get(f"/v1/webhooks/{endpoint['id']}")).json(), "a secret is shown once"
    await wait_delivery(http, await send_test(http, endpoint["id"]), "succeeded")

    [got] = receiver.received
    assert got.verify(endpoint["secret"])["type"] == "webhook.test"
    assert got.verify(new_secret)["type"] == "webhook.test"
    signatures = got.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures), signatures
    with pytest.raises(WebhookVerificationError):
        got.verify(new_webhook_secret())


async def test_a_test_send_arrives_promptly_and_its_attempt_is_logged_with_a_1_kib_response_excerpt(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await register(http, receiver.url(), ["request.done"])
    big_answer = b"".join(b"%05d " % i for i in range(900))  # 5.4 KB
    receiver.reply_with(Reply(body=big_answer))

    delivery_id = await send_test(http, endpoint["id"])
    await assert_eventually(lambda: _received(receiver, 1), timeout=3, message="the test event was not sent promptly")

    [got] = receiver.received
    body = got.verify(endpoint["secret"])
    assert body["type"] == "webhook.test" and body["data"] == {"endpoint_id": endpoint["id"]} and body["timestamp"]
    detail = await wait_delivery(http, delivery_id, "succeeded", attempts=1)
    assert detail["webhook_id"] == got.webhook_id and detail["event_type"] == "webhook.test"
    assert detail["endpoint_id"] == endpoint["id"] and detail["last_status"] == 200 and detail["attempts"] == 1
    [attempt] = detail["attempt_log"]
    assert attempt["status_code"] == 200 and attempt["error"] is None
    assert isinstance(attempt["latency_ms"], int) and 0 <= attempt["latency_ms"] < 3000
    excerpt = attempt["response_body"]
    assert 1000 <= len(excerpt) <= 1024 and big_answer.decode().startswith(excerpt)
    listed = (await http.get(f"/v1/webhooks/{endpoint['id']}/deliveries")).json()["items"]
    assert [(d["id"], d["event_type"], d["state"]) for d in listed] == [(delivery_id, "webhook.test", "succeeded")]


async def test_a_binary_response_with_nul_bytes_is_logged_and_the_delivery_is_not_sent_again(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await register(http, receiver.url(), ["request.done"])
    receiver.reply_with(Reply(body=b"\x00\x01binary\x00\xff" * 10))

    detail = await wait_delivery(http, await send_test(http, endpoint["id"]), "succeeded", attempts=1)

    assert detail["attempt_log"][0]["status_code"] == 200
    assert "binary" in detail["attempt_log"][0]["response_body"]
    assert len(receiver.received) == 1


async def test_resending_a_succeeded_delivery_sends_the_same_id_and_body_and_logs_a_manual_attempt(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await register(http, receiver.url(), ["request.done"])
    request_id = await submit(http, "echo", {"n": 1})
    [done] = await assert_eventually(lambda: _deliveries(http, endpoint["id"], "succeeded"), message="no delivery")
    assert done["request_id"] == request_id and len(receiver.received) == 1

    response = await http.post(f"/v1/deliveries/{done['id']}/retry")
    assert response.status_code == 202, response.text
    detail = await wait_delivery(http, done["id"], "succeeded", attempts=2)

    assert len(receiver.received) == 2
    first, again = receiver.received
    assert again.webhook_id == first.webhook_id == done["webhook_id"] and again.body == first.body
    assert again.verify(endpoint["secret"])["data"]["id"] == request_id
    assert [a["trigger"] for a in detail["attempt_log"]] == ["first", "manual"]
    assert [a["status_code"] for a in detail["attempt_log"]] == [200, 200] and detail["attempts"] == 2


async def test_recover_resends_only_the_failed_deliveries_created_since_the_given_time(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await register(http, receiver.url(), ["request.done"])
    receiver.reply_with(500)
    before = await send_test(http, endpoint["id"])
    await wait_delivery(http, before, "failed", attempts=1)
    since = datetime.now(UTC)

    receiver.reply_with(*[500] * (len(FAST_SCHEDULE) + 1 + 1))  # a request.done through its schedule, and a test
    request_id = await submit(http, "echo", {})
    failed_test = await send_test(http, endpoint["id"])
    [failed_event] = await assert_eventually(
        lambda: _deliveries(http, endpoint["id"], "failed", event_type="request.done"), message="never failed"
    )
    await wait_delivery(http, failed_event["id"], "failed", attempts=len(FAST_SCHEDULE) + 1)
    await wait_delivery(http, failed_test, "failed", attempts=1)
    succeeded = await send_test(http, endpoint["id"])
    await wait_delivery(http, succeeded, "succeeded")
    assert len(receiver.received) == 1 + len(FAST_SCHEDULE) + 1 + 1 + 1 and not receiver.replies
    sent_before = len(receiver.received)

    response = await http.post(f"/v1/webhooks/{endpoint['id']}/recover", json={"since": since.isoformat()})
    assert response.status_code == 202, response.text
    assert response.json() == {"requeued": 2}

    event_detail = await wait_delivery(http, failed_event["id"], "succeeded", attempts=len(FAST_SCHEDULE) + 2)
    test_detail = await wait_delivery(http, failed_test, "succeeded", attempts=2)
    resent = receiver.received[sent_before:]
    assert sorted(r.webhook_id for r in resent) == sorted([event_detail["webhook_id"], test_detail["webhook_id"]])
    assert event_detail["attempt_log"][-1]["trigger"] == "manual" and event_detail["request_id"] == request_id
    assert (await delivery(http, before))["state"] == "failed", "a failure before `since` is left alone"
    assert len((await delivery(http, succeeded))["attempt_log"]) == 1, "a success is not resent"
    again = await http.post(f"/v1/webhooks/{endpoint['id']}/recover", json={"since": since.isoformat()})
    assert again.json() == {"requeued": 0}


async def test_recovering_after_fixing_an_endpoints_url_resends_to_the_new_url(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await register(http, receiver.url("/old"), ["request.done"])
    since = datetime.now(UTC)
    receiver.reply_with(404)
    failed = await send_test(http, endpoint["id"])
    await wait_delivery(http, failed, "failed", attempts=1)

    async with running_receiver() as fixed:
        response = await http.patch(f"/v1/webhooks/{endpoint['id']}", json={"url": fixed.url("/new")})
        assert response.status_code == 200 and response.json()["url"] == fixed.url("/new"), response.text
        recovered = await http.post(f"/v1/webhooks/{endpoint['id']}/recover", json={"since": since.isoformat()})
        assert recovered.json() == {"requeued": 1}, recovered.text
        detail = await wait_delivery(http, failed, "succeeded", attempts=2)
        assert [r.headers["x-path"] for r in fixed.received] == ["/new"]

    assert len(receiver.received) == 1, "the resend went to the old url"
    assert fixed.received[0].webhook_id == detail["webhook_id"] == receiver.received[0].webhook_id
    assert fixed.received[0].body == receiver.received[0].body and detail["url"] == fixed.url("/new")


async def test_an_endpoints_delivery_log_lists_newest_first_and_pages_in_that_order(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await register(http, receiver.url(), ["request.done"])
    request_ids = []
    for n in range(4):
        request_ids.append(await submit(http, "echo", {"n": n}))
        await assert_eventually(partial(_received, receiver, n + 1), message=f"delivery {n} never arrived")

    listed = (await http.get(f"/v1/webhooks/{endpoint['id']}/deliveries")).json()["items"]
    assert [d["request_id"] for d in listed] == request_ids[::-1]
    paged, cursor = [], None
    while True:
        params = {"limit": "1"} | ({"cursor": cursor} if cursor else {})
        page = (await http.get(f"/v1/webhooks/{endpoint['id']}/deliveries", params=params)).json()
        paged += [d["request_id"] for d in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert paged == request_ids[::-1]


# --- endpoint health, callback_url, limits -------------------------------------------------------


async def test_410_gone_disables_the_endpoint_at_once_and_re_enabling_it_brings_events_back(
    http: httpx.AsyncClient, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    endpoint = await register(http, receiver.url(), ["request.done"])
    receiver.reply_with(410)
    first_request = await submit(http, "echo", {"n": 1})
    [gone] = await assert_eventually(lambda: _deliveries(http, endpoint["id"], "failed"), message="410 not final")

    state = (await http.get(f"/v1/webhooks/{endpoint['id']}")).json()
    assert state["enabled"] is False and "410" in state["disabled_reason"]
    assert gone["request_id"] == first_request and gone["attempts"] == 1, "no retries after 410"
    events = await pool.fetch(
        "SELECT type FROM webhook_endpoint_events WHERE endpoint_id = $1", uuid.UUID(endpoint["id"])
    )
    assert [e["type"] for e in events] == ["webhook.endpoint_disabled"]

    async with running_receiver() as witness:
        await register(http, witness.url(), ["request.done"])
        second_request = await submit(http, "echo", {"n": 2})
        await assert_eventually(lambda: _received(witness, 1), message="the witness endpoint got nothing")
    assert len(receiver.received) == 1
    assert [d["request_id"] for d in await _endpoint_deliveries(pool, endpoint["id"])] == [uuid.UUID(first_request)]
    assert (await delivery(http, gone["id"]))["attempts"] == 1

    response = await http.patch(f"/v1/webhooks/{endpoint['id']}", json={"enabled": True})
    assert response.status_code == 200, response.text
    assert response.json()["enabled"] is True and response.json()["disabled_reason"] is None
    third_request = await submit(http, "echo", {"n": 3})
    await assert_eventually(lambda: _received(receiver, 2), message="a re-enabled endpoint got nothing")
    body = receiver.received[1].verify(endpoint["secret"])
    assert body["type"] == "request.done" and body["data"]["id"] == third_request != second_request


async def test_a_requests_callback_url_gets_exactly_its_request_done_signed_with_the_tenant_secret(
    http: httpx.AsyncClient, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    answers = await asyncio.gather(*(http.get("/v1/webhooks/signing-secret") for _ in range(20)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    secrets = {a.json()["secret"] for a in answers}
    assert len(secrets) == 1, "every GET must show the same tenant secret"
    [tenant_secret] = secrets
    assert tenant_secret.startswith("whsec_")
    everything = await register(http, receiver.url("/all"), ["request.*"])

    request_id = await submit(
        http, "echo", {"to": "callback"}, callback_url=receiver.url("/cb"), callback_events=["request.done"]
    )
    await wait_for_status(http, request_id, {"DONE"})
    await assert_eventually(lambda: _count(receiver, "/all", 2), message="the request.* endpoint got too little")
    await assert_eventually(lambda: _count(receiver, "/cb", 1), message="the callback_url got nothing")

    [callback] = receiver.at("/cb")
    body = callback.verify(tenant_secret)
    assert body["type"] == "request.done" and body["data"]["id"] == request_id
    assert body["data"]["result"] == {"to": "callback"}
    with pytest.raises(WebhookVerificationError):
        callback.verify(everything["secret"])
    # Successes are recorded in batches just after the response, so the row may say delivering a moment longer.
    await assert_eventually(lambda: _callback_deliveries_succeeded(pool), message="the callback was not recorded")
    assert (await http.get("/v1/webhooks/signing-secret")).json()["secret"] == tenant_secret


async def _callback_deliveries_succeeded(pool: asyncpg.Pool) -> bool:
    """The one callback_url delivery (request.done) is recorded succeeded; never a second one."""
    rows = await pool.fetch("SELECT event_type, state FROM webhook_deliveries WHERE endpoint_id IS NULL")
    assert [r["event_type"] for r in rows] == ["request.done"], "exactly one callback delivery, for request.done"
    return bool(rows[0]["state"] == "succeeded")


async def test_an_endpoint_never_has_more_requests_in_flight_than_its_max_concurrency(
    http: httpx.AsyncClient, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    endpoint = await register(http, receiver.url(), ["request.done"], max_concurrency=2)
    held = asyncio.Event()
    receiver.reply_with(*[Reply(hold=held) for _ in range(8)])

    try:
        delivery_ids = await asyncio.gather(*(send_test(http, endpoint["id"]) for _ in range(8)))
        await assert_eventually(lambda: _received(receiver, 2), message="not exactly two arrived")
        # Only what the endpoint may send now is claimed: the other six wait unclaimed, holding no slot.
        await assert_eventually(lambda: _claimed_only(pool, endpoint["id"], 2), message="not exactly two claimed")
        assert len(receiver.received) == 2 and receiver.in_flight == 2
    finally:
        held.set()
    for delivery_id in delivery_ids:
        await wait_delivery(http, delivery_id, "succeeded")

    assert receiver.max_in_flight == 2
    assert len(receiver.received) == 8 and len({r.webhook_id for r in receiver.received}) == 8


async def test_an_endpoints_rate_limit_spreads_its_deliveries_over_time_and_all_arrive_once(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await register(http, receiver.url(), ["request.done"], rate_limit_per_second=5)

    delivery_ids = await asyncio.gather(*(send_test(http, endpoint["id"]) for _ in range(15)))
    for delivery_id in delivery_ids:
        await wait_delivery(http, delivery_id, "succeeded", attempts=1)

    arrivals = sorted(r.at for r in receiver.received)
    assert len(arrivals) == 15 and len({r.webhook_id for r in receiver.received}) == 15
    # 5 at once (a one-second burst), then 5 a second: the other 10 take at least ~2 s.
    assert arrivals[-1] - arrivals[0] >= 1.5, f"15 deliveries at 5/s took only {arrivals[-1] - arrivals[0]:.2f}s"


async def test_deliveries_waiting_for_their_endpoints_limit_longer_than_the_lease_are_still_sent_once(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await register(http, receiver.url(), ["request.done"], rate_limit_per_second=2)

    delivery_ids = await asyncio.gather(*(send_test(http, endpoint["id"]) for _ in range(8)))
    for delivery_id in delivery_ids:
        await wait_delivery(http, delivery_id, "succeeded", attempts=1)
    # The last ones waited ~3 s for a token, past the 2 s lease: a duplicate would be sent right after them.
    barrier = await send_test(http, endpoint["id"])
    await wait_delivery(http, barrier, "succeeded", attempts=1)

    arrivals = sorted(r.at for r in receiver.received)
    assert arrivals[-1] - arrivals[0] >= 2.5, "the rate limit did not hold the deliveries past the lease"
    ids = [r.webhook_id for r in receiver.received]
    assert len(ids) == 9 and len(set(ids)) == 9, f"{len(ids) - len(set(ids))} sent twice to a healthy receiver"
    for delivery_id in delivery_ids:
        assert len((await delivery(http, delivery_id))["attempt_log"]) == 1


# --- failures of ackflow itself, deletion, filtering ---------------------------------------------


async def test_a_delivery_cut_off_by_a_worker_stop_is_sent_again_with_the_same_id_and_body_and_succeeds(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: Redis,
    temporal: Client,
    registry: HandlerRegistry,
    tenant: Tenant,
    receiver: Receiver,
) -> None:
    fast = replace(settings, webhook_retry_schedule=FAST_SCHEDULE, webhook_lease_seconds=2)
    held = asyncio.Event()
    receiver.reply_with(Reply(hold=held))
    async with api_client(fast, tenant.api_key) as http:
        async with running_roles(fast, pool, redis, temporal, registry):
            endpoint = await register(http, receiver.url(), ["request.done"])
            request_id = await submit(http, "echo", {"survives": "a crash"})
            await assert_eventually(lambda: _received(receiver, 1), message="the first attempt never arrived")
        [cut_off] = await _endpoint_deliveries(pool, endpoint["id"])
        assert cut_off["state"] == "delivering", "the cut-off attempt must not be recorded as an outcome"

        async with running_roles(fast, pool, redis, temporal, registry):
            detail = await wait_delivery(http, str(cut_off["id"]), "succeeded", timeout=20)
        held.set()

    assert len(receiver.received) == 2
    assert len({r.webhook_id for r in receiver.received}) == 1 and len({r.body for r in receiver.received}) == 1
    assert receiver.received[1].verify(endpoint["secret"])["data"]["id"] == request_id
    assert [a["status_code"] for a in detail["attempt_log"]] == [200]


async def test_a_deleted_endpoint_gets_nothing_more_not_even_retries_already_under_way(
    http: httpx.AsyncClient, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    endpoint = await register(http, receiver.url(), ["request.done"])
    held = asyncio.Event()
    receiver.reply_with(Reply(500, hold=held))
    await submit(http, "echo", {"n": 1})
    await assert_eventually(lambda: _received(receiver, 1), message="the first attempt never arrived")
    [under_way] = await _endpoint_deliveries(pool, endpoint["id"])

    deleted = await http.delete(f"/v1/webhooks/{endpoint['id']}")
    assert deleted.status_code == 204, deleted.text
    assert_problem(await http.get(f"/v1/webhooks/{endpoint['id']}"), 404, "not-found")
    assert (await http.get("/v1/webhooks")).json()["items"] == []
    held.set()
    detail = await wait_delivery(http, str(under_way["id"]), "failed")

    async with running_receiver() as witness:
        await register(http, witness.url(), ["request.done"])
        await submit(http, "echo", {"n": 2})
        await assert_eventually(lambda: _received(witness, 1), message="the witness endpoint got nothing")
    assert len(receiver.received) == 1
    assert [a["status_code"] for a in detail["attempt_log"]] == [500]
    assert len(await _endpoint_deliveries(pool, endpoint["id"])) == 1
    assert_problem(await http.delete(f"/v1/webhooks/{endpoint['id']}"), 404, "not-found")


async def test_changing_an_endpoints_event_types_changes_what_it_receives(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await register(http, receiver.url("/ep"), ["request.failed"])
    async with running_receiver() as witness:
        await register(http, witness.url(), ["request.done", "request.failed"])
        done_id = await submit(http, "echo", {})
        await assert_eventually(lambda: _received(witness, 1), message="the witness endpoint got nothing")
        assert receiver.received == [], "request.done reached an endpoint subscribed to request.failed only"

        response = await http.patch(f"/v1/webhooks/{endpoint['id']}", json={"event_types": ["request.done"]})
        assert response.status_code == 200 and response.json()["event_types"] == ["request.done"], response.text
        failed_id = await submit(http, "fail", {})
        await wait_for_status(http, failed_id, {"FAILED"})
        second_done = await submit(http, "echo", {})
        await assert_eventually(lambda: _received(witness, 3), message="the witness endpoint got too little")
        await assert_eventually(lambda: _received(receiver, 1), message="the changed endpoint got nothing")

    [got] = receiver.received
    body = got.verify(endpoint["secret"])
    assert body["type"] == "request.done" and body["data"]["id"] == second_done != done_id


async def _claimed_only(pool: asyncpg.Pool, endpoint_id: str, count: int) -> bool:
    states = [d["state"] for d in await _endpoint_deliveries(pool, endpoint_id)]
    assert states.count("delivering") <= count, f"{states.count('delivering')} claimed at once"
    return states.count("delivering") == count and states.count("pending") == len(states) - count


async def test_a_request_links_its_events_and_deliveries_which_list_its_endpoint_and_callback_deliveries(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    endpoint = await register(http, receiver.url("/endpoint"), ["request.done"])
    request_id = await submit(
        http, "echo", {}, callback_url=receiver.url("/callback"), callback_events=["request.done"]
    )
    await wait_for_status(http, request_id, {"DONE"})
    await assert_eventually(lambda: _count(receiver, "/endpoint", 1), message="the endpoint got nothing")
    await assert_eventually(lambda: _count(receiver, "/callback", 1), message="the callback_url got nothing")

    state = (await http.get(f"/v1/requests/{request_id}")).json()
    location = f"/v1/requests/{request_id}"
    assert state["links"] == {
        "self": location,
        "events": f"{location}/events",
        "deliveries": f"{location}/deliveries",
    }
    first = (await http.get(state["links"]["deliveries"], params={"limit": 1})).json()
    second = (await http.get(state["links"]["deliveries"], params={"limit": 1, "cursor": first["next_cursor"]})).json()
    assert first["next_cursor"] and second["next_cursor"] is None
    deliveries = first["items"] + second["items"]
    assert {d["endpoint_id"] for d in deliveries} == {endpoint["id"], None}  # None: the callback_url's
    assert {d["request_id"] for d in deliveries} == {request_id}
    assert all(d["event_type"] == "request.done" for d in deliveries)
    events = await http.get(state["links"]["events"])
    assert events.status_code == 200 and events.headers["content-type"].startswith("text/event-stream")
    assert "event: request.done" in events.text  # the history replayed, then the stream ends with the request
