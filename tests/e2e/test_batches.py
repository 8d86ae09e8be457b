"""Batch submission on the running stack: POST /v1/requests/batch accepts up to 1,000 requests in one
transaction, answers each item's request or its own problem in order (unless `atomic`: then one bad
item refuses them all and nothing is written), honours each item's idempotency key, counts every item
against the tenant's rate limit, and GET /v1/batches/{id} counts the batch's requests by status."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest

from ackflow.client import AckflowClient, ApiError
from ackflow.settings import Settings
from tests.conftest import Tenant, api_client
from tests.e2e.test_client import sdk
from tests.helpers import assert_eventually, assert_problem, wait_for_status

__all__ = ["sdk"]  # the fixture


async def written(pool: asyncpg.Pool) -> tuple[int, int, int]:
    """(requests, outbox rows, batches): what a refused batch must leave as it was."""
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM requests), (SELECT count(*) FROM outbox),"
        " (SELECT count(*) FROM submitted_batches)"
    )
    return row[0], row[1], row[2]


async def test_a_batch_accepts_the_good_items_answers_each_bad_one_with_its_problem_and_counts_by_status(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    items: list[dict[str, Any]] = [
        {"kind": "echo", "payload": {"n": 0}},
        {"kind": "echo", "payload": {"n": 1}, "priority": 9},
        {"kind": "no-such-kind", "payload": {}},
        {"kind": "echo", "payload": {"n": 3}, "tags": ["bulk"]},
        {"kind": "echo", "payload": {"x": "a\u0000b"}},
        {"kind": "echo", "payload": {"n": 5}, "unknown": 1},
    ]

    response = await client.post("/v1/requests/batch", json={"items": items})

    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/batches/{body['id']}" == body["links"]["self"]
    assert (body["size"], body["accepted"]) == (6, 2)
    assert [answer["index"] for answer in body["items"]] == list(range(6))
    good = [answer["request"] for answer in body["items"] if "request" in answer]
    assert [answer["index"] for answer in body["items"] if "request" in answer] == [0, 3]
    assert all(r["status"] == "INIT" and "token=" in r["links"]["events"] for r in good)
    problems = {answer["index"]: answer["problem"] for answer in body["items"] if "problem" in answer}
    assert problems[1]["status"] == 422 and problems[1]["errors"][0]["field"] == "priority", problems[1]
    assert problems[2]["type"].endswith("unknown-kind"), problems[2]
    assert problems[4]["errors"][0]["field"] == "payload", problems[4]
    assert problems[5]["errors"][0]["field"] == "unknown", problems[5]

    for request in good:
        await wait_for_status(client, request["id"], {"DONE"}, timeout=60)

    async def counted() -> dict[str, Any] | None:
        state = (await client.get(body["links"]["self"])).json()
        return state if state["counts"] == {"DONE": 2} else None

    state = await assert_eventually(counted, timeout=30, message="the batch's counts never showed both DONE")
    assert (state["size"], state["accepted"]) == (6, 2)
    tagged = (await client.get("/v1/requests", params={"tag": "bulk"})).json()["items"]
    assert [r["id"] for r in tagged] == [good[1]["id"]]


async def test_an_atomic_batch_with_one_bad_item_writes_nothing(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    before = await written(pool)
    items = [{"kind": "echo", "payload": {}}, {"kind": "no-such-kind"}, {"kind": "echo", "delay_seconds": -1}]

    response = await client.post("/v1/requests/batch", json={"items": items, "atomic": True})

    problem = assert_problem(response, 422)
    assert [item["index"] for item in problem["items"]] == [2], problem  # what fails before any write
    response = await client.post("/v1/requests/batch", json={"items": items[:2], "atomic": True})
    problem = assert_problem(response, 422)
    assert [item["index"] for item in problem["items"]] == [1], problem  # the kind, found while writing
    assert await written(pool) == before


async def test_a_batch_of_nothing_but_bad_items_is_422_and_writes_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    before = await written(pool)

    response = await client.post("/v1/requests/batch", json={"items": [{"kind": 5}, {"payload": {}}]})

    problem = assert_problem(response, 422)
    assert [item["problem"]["errors"][0]["field"] for item in problem["items"]] == ["kind", "kind"]
    assert await written(pool) == before


async def test_each_items_idempotency_key_replays_its_request_and_refuses_another_body(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    items = [{"kind": "echo", "payload": {"n": n}, "idempotency_key": f"order-{n}"} for n in range(3)]
    first = (await client.post("/v1/requests/batch", json={"items": items})).json()
    requests = await pool.fetchval("SELECT count(*) FROM requests")

    again = await client.post("/v1/requests/batch", json={"items": [*items, {**items[0], "payload": {"n": 99}}]})

    assert again.status_code == 202, again.text
    answers = again.json()["items"]
    assert [a["request"]["id"] for a in answers[:3]] == [a["request"]["id"] for a in first["items"]]
    assert all(a["replayed"] for a in answers[:3])
    assert (again.json()["accepted"], again.json()["replayed"]) == (0, 3)
    assert answers[3]["problem"]["status"] == 422, answers[3]
    assert await pool.fetchval("SELECT count(*) FROM requests") == requests


async def test_a_batch_counts_every_item_against_the_rate_limit(
    settings: Settings, pool: asyncpg.Pool, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await pool.execute("UPDATE tenants SET accept_rate_per_second = 10 WHERE id = $1", tenant.id)  # a burst of 20
    before = await written(pool)
    batch = [{"kind": "echo", "payload": {"n": n}} for n in range(25)]

    too_big = await client.post("/v1/requests/batch", json={"items": batch})
    accepted = await client.post("/v1/requests/batch", json={"items": batch[:15]})
    over = await client.post("/v1/requests/batch", json={"items": batch[:15]})

    assert_problem(too_big, 422)
    assert accepted.status_code == 202, accepted.text
    assert_problem(over, 429, "too-many-requests")
    assert int(over.headers["retry-after"]) >= 1
    assert (await written(pool))[0] == before[0] + 15


@pytest.mark.parametrize(
    "body",
    [{"items": []}, {"items": [{"kind": "echo"}] * 1001}, {"items": {}}, {"atomic": True}, {"items": [], "x": 1}],
)
async def test_a_batch_body_out_of_shape_is_422_and_writes_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool, body: dict[str, Any]
) -> None:
    before = await written(pool)
    assert_problem(await client.post("/v1/requests/batch", json=body), 422)
    assert await written(pool) == before


async def test_a_batch_is_its_tenants_alone(
    client: httpx.AsyncClient, settings: Settings, other_tenant: Tenant
) -> None:
    accepted = (await client.post("/v1/requests/batch", json={"items": [{"kind": "echo"}]})).json()
    async with api_client(settings, other_tenant.api_key) as other:
        assert_problem(await other.get(accepted["links"]["self"]), 404, "not-found")
    async with api_client(settings, None) as anonymous:
        assert_problem(await anonymous.post("/v1/requests/batch", json={"items": [{"kind": "echo"}]}), 401)
    assert_problem(await client.get("/v1/batches/00000000-0000-0000-0000-000000000000"), 404, "not-found")


async def test_a_busy_key_under_skip_refuses_only_that_item(client: httpx.AsyncClient) -> None:
    items = [{"kind": "sleep", "payload": {"seconds": 30}, "concurrency_key": "k", "concurrency_policy": "skip"}] * 2
    answers = (await client.post("/v1/requests/batch", json={"items": items})).json()["items"]
    assert "request" in answers[0]
    assert answers[1]["problem"]["status"] == 409
    assert answers[1]["problem"]["running_requests"] == [answers[0]["request"]["id"]]
    assert (await client.post(f"/v1/requests/{answers[0]['request']['id']}/cancel")).status_code == 202


async def test_the_client_submits_a_batch_and_reads_its_counts(sdk: AckflowClient) -> None:
    batch = await sdk.submit_batch([{"kind": "echo", "payload": {"n": n}} for n in range(3)] + [{"kind": "nope"}])

    assert (batch.size, batch.accepted) == (4, 3)
    assert batch.items[3].problem is not None and batch.items[3].request is None
    for answer in batch.items[:3]:
        assert answer.request is not None
        await sdk.wait(answer.request.id, timeout=60)
    assert (await sdk.get_batch(batch.id)).counts == {"DONE": 3}
    with pytest.raises(ApiError) as refused:
        await sdk.submit_batch([{"kind": "nope"}], atomic=True)
    assert refused.value.status == 422


async def test_batches_sharing_keys_in_opposite_orders_take_turns_and_never_deadlock(client: httpx.AsyncClient) -> None:
    """Each item's accept locks its key's slots row until the batch commits: without taking a batch's keys
    in one order first, [a, b] and [b, a] at once deadlocked (and one batch failed)."""

    def batch(keys: list[str]) -> dict[str, Any]:
        return {
            "items": [{"kind": "echo", "payload": {}, "concurrency_key": key, "concurrency_limit": 100} for key in keys]
        }

    forward, backward = [f"key-{n}" for n in range(20)], [f"key-{n}" for n in reversed(range(20))]
    responses = await asyncio.gather(
        *(client.post("/v1/requests/batch", json=batch(keys)) for _ in range(5) for keys in (forward, backward))
    )

    assert [r.status_code for r in responses] == [202] * 10, [r.text[:200] for r in responses if r.status_code != 202]
    assert all(r.json()["accepted"] == 20 for r in responses)
