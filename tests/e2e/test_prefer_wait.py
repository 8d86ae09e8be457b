"""`POST /v1/requests` with `Prefer: wait=N` (RFC 7240): the final state when the work is fast."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.helpers import wait_for_status

pytestmark = pytest.mark.usefixtures("stack")


async def post(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.post("/v1/requests", json=body, headers=headers, timeout=30)


@pytest.mark.parametrize(("kind", "status"), [("echo", "DONE"), ("fail", "FAILED")])
async def test_prefer_wait_answers_200_with_the_final_state_when_the_request_ends_in_time(
    client: httpx.AsyncClient, kind: str, status: str
) -> None:
    response = await post(client, {"kind": kind, "payload": {"hello": "world"}}, Prefer="wait=10")

    assert response.status_code == 200, response.text
    state = response.json()
    assert state["status"] == status
    if status == "DONE":
        assert state["result"] == {"hello": "world"}
    assert response.headers["preference-applied"] == "wait=10"
    assert response.headers["location"] == f"/v1/requests/{state['id']}"
    assert "retry-after" not in response.headers


async def test_prefer_wait_answers_the_usual_202_after_n_seconds_when_the_work_is_slower(
    client: httpx.AsyncClient,
) -> None:
    started = time.monotonic()
    response = await post(client, {"kind": "sleep", "payload": {"seconds": 30}}, Prefer="wait=1")

    assert time.monotonic() - started >= 1
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["status"] == "INIT" and "events" in accepted["links"]  # the accept's own body
    assert response.headers["preference-applied"] == "wait=1"
    assert response.headers["retry-after"] == "1"
    await client.post(f"/v1/requests/{accepted['id']}/cancel")


async def test_prefer_respond_async_answers_202_at_once_even_beside_a_wait(client: httpx.AsyncClient) -> None:
    response = await post(client, {"kind": "sleep", "payload": {"seconds": 30}}, Prefer="respond-async, wait=20")

    assert response.status_code == 202
    assert response.headers["preference-applied"] == "respond-async"
    await client.post(f"/v1/requests/{response.json()['id']}/cancel")


async def test_an_idempotent_replay_honours_prefer_wait_and_creates_nothing(client: httpx.AsyncClient) -> None:
    body = {"kind": "echo", "payload": {"n": 1}}
    first = await post(client, body, **{"Idempotency-Key": "prefer-replay"})
    assert first.status_code == 202
    await wait_for_status(client, first.json()["id"], {"DONE"})

    replay = await post(client, body, **{"Idempotency-Key": "prefer-replay", "Prefer": "wait=5"})

    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"] and replay.json()["result"] == {"n": 1}
    listed = (await client.get("/v1/requests", params={"kind": "echo"})).json()
    assert [item["id"] for item in listed["items"]] == [first.json()["id"]]


@pytest.mark.parametrize("prefer", ["wait=soon", "wait=-1", "handling=lenient", ""])
async def test_a_prefer_header_without_a_usable_wait_is_ignored(client: httpx.AsyncClient, prefer: str) -> None:
    response = await post(client, {"kind": "sleep", "payload": {"seconds": 30}}, Prefer=prefer)

    assert response.status_code == 202
    assert "preference-applied" not in response.headers
    await client.post(f"/v1/requests/{response.json()['id']}/cancel")


async def test_a_waited_answer_is_counted_but_left_out_of_the_accept_latency(client: httpx.AsyncClient) -> None:
    timed, answered = _accept_latency_count(), _answers_with_status("200")

    response = await post(client, {"kind": "echo", "payload": {}}, Prefer="wait=10")

    assert response.status_code == 200
    assert _accept_latency_count() == timed, "the wait for the work is not the accept's latency"
    assert _answers_with_status("200") == answered + 1


def _accept_latency_count() -> float:
    return REGISTRY.get_sample_value("ackflow_accept_duration_seconds_count") or 0.0


def _answers_with_status(status: str) -> float:
    """ackflow_accepts_total summed over tenants and kinds (the roles run in this process)."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name == "ackflow_accepts_total" and sample.labels.get("status") == status
    )
