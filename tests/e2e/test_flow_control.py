"""Concurrency keys, priority and tags on the running stack: POST /v1/requests with a
`concurrency_key` runs the tenant's requests of one key one at a time (or `concurrency_limit` at a
time), the waiting ones INIT with `waiting_for: concurrency_key`; policy `skip` answers 409 naming
the holders and accepts nothing; tenants never share a key; `priority` and `tags` show on every
channel, and tags filter the list and the tenant event stream. The client passes them all through.
(Admission's side: tests/integration/test_concurrency_keys.py; chaos: tests/chaos/test_concurrency_keys_killed.py.)"""

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
from tests.helpers import assert_problem, read_sse, wait_for_status
from tests.integration.test_concurrency_keys import most_at_once, run_intervals

__all__ = ["sdk"]  # the fixture


async def post(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/requests", json={"kind": "sleep", "payload": {"seconds": 0.5}, **body})
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


async def test_requests_with_one_key_run_one_at_a_time_and_the_waiting_ones_say_why(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    accepted = [await post(client, concurrency_key="customer-42") for _ in range(3)]
    assert [a.get("waiting_for") for a in accepted[1:]] == ["concurrency_key", "concurrency_key"]
    waiting = (await client.get(f"/v1/requests/{accepted[2]['id']}")).json()
    assert waiting["status"] == "INIT" and waiting["waiting_for"] == "concurrency_key", waiting
    assert waiting["concurrency_key"] == "customer-42"

    for request in accepted:
        done = await wait_for_status(client, request["id"], {"DONE"}, timeout=60)
        assert "waiting_for" not in done or done["waiting_for"] is None
    intervals = await run_intervals(pool, [a["id"] for a in accepted])
    assert len(intervals) == 3 and most_at_once(intervals) == 1, intervals


async def test_skip_answers_409_naming_the_running_request_and_accepts_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    running = await post(client, concurrency_key="nightly", concurrency_policy="skip", payload={"seconds": 30})
    before = await pool.fetchval("SELECT count(*) FROM requests")

    response = await client.post(
        "/v1/requests",
        json={"kind": "sleep", "payload": {}, "concurrency_key": "nightly", "concurrency_policy": "skip"},
    )

    problem = assert_problem(response, 409, "concurrency-key-busy")
    assert problem["running_requests"] == [running["id"]], problem
    assert problem["errors"][0]["field"] == "concurrency_key"
    assert await pool.fetchval("SELECT count(*) FROM requests") == before
    assert (await client.post(f"/v1/requests/{running['id']}/cancel")).status_code == 202
    again = await post(client, concurrency_key="nightly", concurrency_policy="skip")  # the key is free again
    await wait_for_status(client, again["id"], {"DONE"}, timeout=60)


async def test_two_tenants_never_share_a_concurrency_key(
    client: httpx.AsyncClient, settings: Settings, other_tenant: Tenant
) -> None:
    mine = await post(client, concurrency_key="shared-name", payload={"seconds": 30})
    async with api_client(settings, other_tenant.api_key) as other:
        theirs = await post(other, concurrency_key="shared-name", concurrency_policy="skip")
        assert theirs.get("waiting_for") != "concurrency_key"
        await wait_for_status(other, theirs["id"], {"DONE"}, timeout=60)
    assert (await client.post(f"/v1/requests/{mine['id']}/cancel")).status_code == 202


async def test_priority_and_tags_show_on_the_request_and_tags_filter_the_list(client: httpx.AsyncClient) -> None:
    tagged = await post(client, kind="echo", payload={"n": 1}, priority=1, tags=["invoice", "acme"])
    await post(client, kind="echo", payload={"n": 2}, tags=["invoice"])
    await post(client, kind="echo", payload={"n": 3})

    done = await wait_for_status(client, tagged["id"], {"DONE"}, timeout=60)
    assert done["priority"] == 1 and done["tags"] == ["invoice", "acme"], done
    both = (await client.get("/v1/requests", params=[("tag", "invoice"), ("tag", "acme")])).json()
    assert [item["id"] for item in both["items"]] == [tagged["id"]]
    invoices = (await client.get("/v1/requests", params={"tag": "invoice"})).json()
    assert len(invoices["items"]) == 2
    by_key = (await client.get("/v1/requests", params={"concurrency_key": "nope"})).json()
    assert by_key["items"] == []


async def test_the_tenant_event_stream_filtered_by_tag_carries_only_those_requests(client: httpx.AsyncClient) -> None:
    async with client.stream("GET", "/v1/events", params={"tag": "watched"}) as response:
        assert response.status_code == 200
        await post(client, kind="echo", payload={"watched": False}, tags=["other"])
        watched = await post(client, kind="echo", payload={"watched": True}, tags=["watched"])
        events = await asyncio.wait_for(read_sse(response, until=lambda e: e.event == "request.done"), timeout=30)
    assert {e.json()["id"] for e in events} == {watched["id"]}
    assert all(e.json()["tags"] == ["watched"] for e in events)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"concurrency_limit": 2}, "concurrency_limit"),
        ({"concurrency_policy": "skip"}, "concurrency_policy"),
        ({"tags": ["a", "a"]}, "tags"),
    ],
)
async def test_controls_that_need_each_other_or_repeat_answer_422_and_accept_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool, body: dict[str, Any], field: str
) -> None:
    before = await pool.fetchval("SELECT count(*) FROM requests")

    response = await client.post("/v1/requests", json={"kind": "echo", "payload": {}, **body})

    problem = assert_problem(response, 422)
    assert problem["errors"][0]["field"] == field, problem
    assert await pool.fetchval("SELECT count(*) FROM requests") == before


async def test_the_client_passes_the_controls_through_and_reads_the_holders_of_a_busy_key(sdk: AckflowClient) -> None:
    first = await sdk.submit("sleep", {"seconds": 30}, concurrency_key="report", priority=2, tags=["nightly"])
    queued = await sdk.submit("echo", {}, concurrency_key="report", concurrency_limit=1)
    assert queued.waiting_for == "concurrency_key"

    with pytest.raises(ApiError) as refused:
        await sdk.submit("echo", {}, concurrency_key="report", concurrency_policy="skip")
    assert refused.value.status == 409 and refused.value.running_requests == [first.id]

    replacing = await sdk.submit("echo", {"last": True}, concurrency_key="report", concurrency_policy="cancel_running")
    assert (await sdk.wait(replacing.id, timeout=60)).status == "DONE"
    assert (await sdk.get(first.id)).status == "CANCELLED"
    cancelled = await sdk.get(queued.id)
    assert cancelled.status == "CANCELLED" and cancelled.error is not None and cancelled.error["type"] == "Superseded"
    page = await sdk.list(tags=["nightly"])
    assert [item.id for item in page.items] == [first.id] and page.items[0].priority == 2
