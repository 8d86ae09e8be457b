"""Workflow kinds on the running stack: the example pipeline (fetch -> transform with progress -> wait
for approval -> publish) to DONE, its input by API key and by capability URL, cancel in the middle,
and every wrong way to deliver an input refused with nothing changed."""

from __future__ import annotations

import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from ackflow.contracts import work_workflow_id
from ackflow.settings import Settings
from gateway.capabilities import CapabilityTokens, load_signing_key
from tests.conftest import Tenant, api_client
from tests.e2e.test_progress import sse
from tests.helpers import assert_eventually, assert_problem, wait_for_status

APPROVED = {"name": "approval", "value": {"approved": True, "by": "ana"}}


async def submit_pipeline(http: httpx.AsyncClient, items: int = 3, step_seconds: float = 0.05) -> str:
    body = {"kind": "pipeline", "payload": {"items": items, "step_seconds": step_seconds}}
    response = await http.post("/v1/requests", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def waiting_for_approval(http: httpx.AsyncClient, request_id: str) -> dict[str, Any]:
    async def waiting() -> dict[str, Any] | None:
        state = (await http.get(f"/v1/requests/{request_id}")).json()
        return state if (state.get("waiting") or {}).get("input") == "approval" else None

    state = await assert_eventually(waiting, timeout=60, message="the pipeline never waited for approval")
    assert isinstance(state, dict)
    return state


async def test_the_pipeline_runs_its_steps_waits_for_approval_and_ends_done_with_its_progress(
    client: httpx.AsyncClient, temporal: Client
) -> None:
    request_id = await submit_pipeline(client)
    state = await waiting_for_approval(client, request_id)
    assert state["status"] == "PROCESSING" and state["progress"]["message"] == "transformed 3 of 3"
    assert state["links"]["input"].startswith(f"/v1/requests/{request_id}/input?token=")

    delivered = await client.post(f"/v1/requests/{request_id}/input", json=APPROVED)
    assert delivered.status_code == 202, delivered.text
    assert delivered.json()["waiting"] is None
    done = await wait_for_status(client, request_id, {"DONE"}, timeout=60)
    assert done["result"]["approved_by"] == "ana" and done["result"]["items"] == 3
    assert done["progress"]["fraction"] == 1.0 and done["waiting"] is None

    events = await sse(client, request_id)
    topics = [e["event"] for e in events]
    assert topics[:2] == ["request.accepted", "request.processing"]
    assert topics.index("request.waiting") < topics.index("request.input_received") < topics.index("request.done")
    reports = [e["data"]["progress"] for e in events if e["event"] == "request.progress"]
    messages = [report["message"] for report in reports]  # reports closer than the interval are coalesced
    assert messages[0] == "fetched 3 items" and messages[-2:] == ["transformed 3 of 3", "published"]
    assert set(messages) <= {"fetched 3 items", "published"} | {f"transformed {i} of 3" for i in (1, 2, 3)}
    fractions = [report["fraction"] for report in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    work = await temporal.get_workflow_handle(work_workflow_id(request_id)).describe()
    assert work.workflow_type == "ExamplePipeline" and work.status == WorkflowExecutionStatus.COMPLETED
    assert work.parent_id == done["workflow_id"], "a child of the request's batch, found from the request"


async def test_the_capability_url_delivers_the_input_without_the_api_key_and_only_that_input(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    request_id = await submit_pipeline(client)
    link = (await waiting_for_approval(client, request_id))["links"]["input"]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}") as anyone:
        other_name = await anyone.post(link, json={"name": "other", "value": 1})
        assert_problem(other_name, 403, "forbidden")
        delivered = await anyone.post(link, json={"name": "approval", "value": {"approved": False, "by": "bo"}})
        assert delivered.status_code == 202, delivered.text
        again = await anyone.post(link, json={"name": "approval", "value": {"approved": True}})
        assert_problem(again, 409, "conflict")
        events_with_it = await anyone.get(link.replace("/input?", "/events?"))
        assert_problem(events_with_it, 401, "unauthorized")
    failed = await wait_for_status(client, request_id, {"FAILED"}, timeout=60)
    assert failed["error"] == {"type": "NotApproved", "message": "not approved by bo"}


async def test_cancelling_in_the_middle_cancels_the_running_step_and_ends_cancelled(
    client: httpx.AsyncClient, temporal: Client
) -> None:
    request_id = await submit_pipeline(client, items=200, step_seconds=0.1)  # 20 s of transform

    async def transforming() -> bool:
        state = (await client.get(f"/v1/requests/{request_id}")).json()
        return "transformed" in ((state.get("progress") or {}).get("message") or "")

    await assert_eventually(transforming, timeout=60, message="the transform step never reported")
    assert (await client.post(f"/v1/requests/{request_id}/cancel")).status_code == 202
    await wait_for_status(client, request_id, {"CANCELLED"}, timeout=30)

    handle = temporal.get_workflow_handle(work_workflow_id(request_id))

    async def work_cancelled() -> bool:
        return (await handle.describe()).status == WorkflowExecutionStatus.CANCELED

    await assert_eventually(work_cancelled, timeout=30, message="the pipeline's run was not cancelled")
    history = await handle.fetch_history()
    assert any(e.HasField("activity_task_cancel_requested_event_attributes") for e in history.events)


BODY_CHANGES: dict[str, Any] = {
    "the wrong input name": lambda body, settings: {**body, "name": "go_ahead"},
    "a value too large": lambda body, settings: {**body, "value": "x" * (settings.max_input_bytes + 1)},
    "a value nested too deep": lambda body, settings: {**body, "value": _nested(settings.max_json_depth + 1)},
    "a NUL in the value": lambda body, settings: {**body, "value": {"note": "a\u0000b"}},
    "an unknown field": lambda body, settings: {**body, "extra": 1},
    "a name that is no name": lambda body, settings: {**body, "name": "Not A Name!"},
}


def _token_for(case: str, tokens: CapabilityTokens, request_id: uuid.UUID, tenant_id: uuid.UUID, key: uuid.UUID) -> str:
    if case == "an expired token":
        return tokens.issue_input(request_id, tenant_id, key, "approval", now=time.time() - 7200)
    if case == "an events token":
        return tokens.issue(request_id, tenant_id, key)
    if case == "a token of another request":
        return tokens.issue_input(uuid.uuid4(), tenant_id, key, "approval")
    return "not.a.token.at.all"


@pytest.mark.parametrize(
    ("case", "status", "slug"),
    [
        ("no such request", 404, "not-found"),
        ("another tenant's key", 404, "not-found"),
        ("a garbled token", 401, "unauthorized"),
        ("an expired token", 401, "unauthorized"),
        ("an events token", 401, "unauthorized"),
        ("a token of another request", 401, "unauthorized"),
        ("the wrong input name", 409, "conflict"),
        ("a value too large", 413, "payload-too-large"),
        ("a value nested too deep", 422, "invalid-input"),
        ("a NUL in the value", 422, "invalid-input"),
        ("an unknown field", 422, "invalid-input"),
        ("a name that is no name", 422, "invalid-input"),
        ("not JSON", 400, None),
    ],
)
async def test_a_wrong_input_is_refused_clearly_and_changes_nothing(
    client: httpx.AsyncClient,
    settings: Settings,
    pool: asyncpg.Pool,
    tenant: Tenant,
    other_tenant: Tenant,
    case: str,
    status: int,
    slug: str | None,
) -> None:
    request_id = await submit_pipeline(client)
    before = await waiting_for_approval(client, request_id)
    url = f"/v1/requests/{request_id}/input"
    body = BODY_CHANGES.get(case, lambda body, settings: body)(dict(APPROVED), settings)
    if case == "no such request":
        response = await client.post(f"/v1/requests/{uuid.uuid4()}/input", json=body)
    elif case == "another tenant's key":
        async with api_client(settings, other_tenant.api_key) as other:
            response = await other.post(url, json=body)
    elif case == "not JSON":
        response = await client.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    elif "token" in case:
        tokens = CapabilityTokens(await load_signing_key(pool), settings.capability_ttl_seconds, 3600)
        key = await pool.fetchval("SELECT id FROM api_keys WHERE tenant_id = $1", tenant.id)
        token = _token_for(case, tokens, uuid.UUID(request_id), tenant.id, key)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}") as anyone:
            response = await anyone.post(url, params={"token": token}, json=body)
    else:
        response = await client.post(url, json=body)

    assert_problem(response, status, slug)
    after = (await client.get(f"/v1/requests/{request_id}")).json()
    assert (after["version"], after["waiting"]) == (before["version"], before["waiting"]), "nothing changed"
    assert await pool.fetchval("SELECT count(*) FROM request_inputs") == 0
    delivered = await client.post(url, json=APPROVED)
    assert delivered.status_code == 202, "and it keeps serving"


async def test_an_input_to_a_request_that_waits_for_none_is_a_conflict(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/requests", json={"kind": "echo", "payload": {}})
    request_id = response.json()["id"]
    await wait_for_status(client, request_id, {"DONE"})
    refused = await client.post(f"/v1/requests/{request_id}/input", json=APPROVED)
    assert "waits for no input" in assert_problem(refused, 409, "conflict")["detail"]


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value
