"""A request over HTTP, through relay, Temporal and worker, to each terminal status."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
from temporalio.client import Client

from ackflow.settings import Settings
from ackflow.temporal import KIND_KEY, KINDS_KEY, REQUEST_IDS_KEY, TENANT_KEY, TENANTS_KEY
from tests.conftest import Tenant
from tests.helpers import assert_eventually, assert_problem, wait_for_status


async def submit(client: httpx.AsyncClient, kind: str, payload: dict[str, object]) -> dict[str, object]:
    response = await client.post("/v1/requests", json={"kind": kind, "payload": payload})
    assert response.status_code == 202, response.text
    return dict(response.json())


async def test_echo_request_is_accepted_then_done_with_its_payload_as_result(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/requests", json={"kind": "echo", "payload": {"hello": "world", "n": 1}})

    assert response.status_code == 202
    accepted = response.json()
    assert accepted["status"] == "INIT" and accepted["version"] == 1 and accepted["kind"] == "echo"
    assert response.headers["location"] == f"/v1/requests/{accepted['id']}"
    assert int(response.headers["retry-after"]) >= 1
    assert accepted["links"]["self"] == f"/v1/requests/{accepted['id']}"
    assert accepted["links"]["events"].startswith(f"/v1/requests/{accepted['id']}/events?token=")
    done = await wait_for_status(client, accepted["id"], {"DONE"})
    assert done["result"] == {"hello": "world", "n": 1}
    assert done["payload"] == {"hello": "world", "n": 1}
    assert done["version"] == 3 and done["error"] is None
    assert done["completed_at"] is not None
    final = await client.get(f"/v1/requests/{accepted['id']}")
    assert "retry-after" not in final.headers


async def test_pending_request_answers_with_retry_after(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, "sleep", {"seconds": 2})
    response = await client.get(f"/v1/requests/{accepted['id']}")
    assert response.json()["status"] in {"INIT", "PROCESSING"}
    assert response.headers["retry-after"] == "1"


async def test_fail_handler_ends_failed_with_its_message_and_no_retry(
    client: httpx.AsyncClient, temporal: Client
) -> None:
    accepted = await submit(client, "fail", {"message": "the printer is on fire"})

    failed = await wait_for_status(client, str(accepted["id"]), {"FAILED"})
    assert failed["error"]["message"] == "the printer is on fire"
    assert failed["error"]["type"] == "PermanentError"
    assert failed["result"] is None
    handle = temporal.get_workflow_handle(failed["workflow_id"])
    await asyncio.wait_for(handle.result(), 20)
    history = await handle.fetch_history()
    # One attempt, in its batch's local activity (a marker in history); no retry ran alone.
    assert len([e for e in history.events if e.HasField("marker_recorded_event_attributes")]) == 1
    assert not [e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")], "a retry"


async def test_transient_handler_failures_are_retried_until_done(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, "flaky", {"key": uuid.uuid4().hex, "failures": 2})

    done = await wait_for_status(client, str(accepted["id"]), {"DONE"})
    assert done["result"] == {"attempts": 3}


async def test_cancelling_a_running_sleep_ends_cancelled(client: httpx.AsyncClient, temporal: Client) -> None:
    accepted = await submit(client, "sleep", {"seconds": 60})
    request_id = str(accepted["id"])
    await wait_for_status(client, request_id, {"PROCESSING"})

    response = await client.post(f"/v1/requests/{request_id}/cancel")

    assert response.status_code == 202
    cancelled = await wait_for_status(client, request_id, {"CANCELLED"})
    assert cancelled["completed_at"] is not None and cancelled["result"] is None
    # Its batch's workflow cancelled its handler's activity, and went on to its own end.
    handle = temporal.get_workflow_handle(cancelled["workflow_id"])
    await asyncio.wait_for(handle.result(), 20)
    history = await handle.fetch_history()
    assert [e for e in history.events if e.HasField("activity_task_cancel_requested_event_attributes")]


async def test_cancelling_a_finished_request_is_a_conflict(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, "echo", {})
    await wait_for_status(client, str(accepted["id"]), {"DONE"})

    response = await client.post(f"/v1/requests/{accepted['id']}/cancel")

    assert_problem(response, 409, "conflict")
    assert (await client.get(f"/v1/requests/{accepted['id']}")).json()["status"] == "DONE"


async def test_an_operator_finds_a_requests_workflow_by_its_id_tenant_and_kind(
    client: httpx.AsyncClient, temporal: Client, tenant: Tenant
) -> None:
    accepted = await submit(client, "echo", {})
    request_id = str(accepted["id"])
    done = await wait_for_status(client, request_id, {"DONE"})

    description = await temporal.get_workflow_handle(done["workflow_id"]).describe()

    assert request_id in description.typed_search_attributes.get(REQUEST_IDS_KEY, [])
    assert description.typed_search_attributes.get(TENANTS_KEY) == [str(tenant.id)]
    assert description.typed_search_attributes.get(KINDS_KEY) == ["echo"]
    assert description.typed_search_attributes.get(TENANT_KEY) == str(tenant.id)
    assert description.typed_search_attributes.get(KIND_KEY) == "echo"
    found = await assert_eventually(  # the visibility store indexes a moment after the start
        lambda: _workflow_ids(temporal, f'AckflowRequestIds = "{request_id}"'), message="not found by request id"
    )
    assert found == [done["workflow_id"]]


async def _workflow_ids(temporal: Client, query: str) -> list[str]:
    return [execution.id async for execution in temporal.list_workflows(query)]


async def test_each_status_change_is_one_event_and_one_outbox_row_in_order(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    accepted = await submit(client, "echo", {"x": 1})
    await wait_for_status(client, str(accepted["id"]), {"DONE"})

    events = await pool.fetch(
        "SELECT topic, status, version FROM request_events WHERE request_id = $1 ORDER BY id",
        uuid.UUID(str(accepted["id"])),
    )
    assert [(e["topic"], e["status"], e["version"]) for e in events] == [
        ("request.accepted", "INIT", 1),
        ("request.processing", "PROCESSING", 2),
        ("request.done", "DONE", 3),
    ]


async def test_list_pages_through_requests_newest_first_with_filters(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    ids = [str((await submit(client, "echo", {"i": i}))["id"]) for i in range(5)]
    failed = str((await submit(client, "fail", {}))["id"])
    await wait_for_status(client, failed, {"FAILED"})

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, "kind": "echo", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/requests", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    only_failed = (await client.get("/v1/requests", params={"status": "FAILED"})).json()
    assert [item["id"] for item in only_failed["items"]] == [failed]


async def test_another_tenants_request_is_not_found_everywhere(
    client: httpx.AsyncClient, settings: Settings, other_tenant: Tenant
) -> None:
    from tests.conftest import api_client

    mine = await submit(client, "echo", {"secret": True})
    async with api_client(settings, other_tenant.api_key) as intruder:
        assert_problem(await intruder.get(f"/v1/requests/{mine['id']}"), 404, "not-found")
        assert_problem(await intruder.post(f"/v1/requests/{mine['id']}/cancel"), 404, "not-found")
        listed = (await intruder.get("/v1/requests")).json()
    assert listed["items"] == []


async def test_a_result_postgres_cannot_store_fails_the_request_without_retrying(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, "nul_result", {})

    failed = await wait_for_status(client, str(accepted["id"]), {"FAILED"})
    assert failed["error"]["type"] == "InvalidResult" and "NUL" in failed["error"]["message"]


async def test_a_result_over_the_size_limit_fails_the_request_with_the_reason(client: httpx.AsyncClient) -> None:
    accepted = await submit(client, "big_result", {})

    failed = await wait_for_status(client, str(accepted["id"]), {"FAILED"})
    assert failed["error"]["type"] == "ResultTooLarge" and "limit" in failed["error"]["message"]
    assert failed["result"] is None
