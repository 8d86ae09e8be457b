"""`ackflow requests show ID`: a request's state, events, workflow link, trace id and deliveries, after real traffic."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import httpx

from ackflow.settings import Settings
from tests.e2e.test_cli import run_ackflow
from tests.e2e.test_webhooks import register, submit
from tests.helpers import assert_eventually, wait_for_status
from tests.receiver import Receiver

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def show(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {"DATABASE_URL": settings.database_url, "ACKFLOW_TEMPORAL_UI_URL": "http://temporal-ui.test:8080/"}
    result = await asyncio.to_thread(run_ackflow, "requests", "show", *args, env=env)
    return result.returncode, result.stdout, result.stderr


async def test_show_prints_state_events_workflow_link_trace_and_each_delivery_attempt(
    http: httpx.AsyncClient, receiver: Receiver, settings: Settings, pool: asyncpg.Pool
) -> None:
    await register(http, receiver.url(), ["request.done"])
    receiver.reply_with(500)  # one failed attempt, then the retry succeeds
    request_id = await submit(http, "echo", {"hello": "world"})
    await wait_for_status(http, request_id, {"DONE"})

    async def delivered() -> bool:
        state = await pool.fetchval("SELECT state FROM webhook_deliveries WHERE request_id = $1", uuid.UUID(request_id))
        return bool(state == "succeeded")

    await assert_eventually(delivered, timeout=30, message="the delivery never succeeded")
    # The traces change records the caller's traceparent in requests.trace_context; here, as it would.
    await pool.execute("ALTER TABLE requests ADD COLUMN IF NOT EXISTS trace_context text")
    await pool.execute("UPDATE requests SET trace_context = $2 WHERE id = $1", uuid.UUID(request_id), TRACEPARENT)
    workflow_id = await pool.fetchval("SELECT workflow_id FROM requests WHERE id = $1", uuid.UUID(request_id))

    code, out, err = await show(settings, request_id, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["id"], report["tenant"], report["kind"], report["status"]) == (request_id, "acme", "echo", "DONE")
    assert report["version"] == 3
    assert [e["topic"] for e in report["events"]] == ["request.accepted", "request.processing", "request.done"]
    assert '"hello"' in report["events"][-1]["summary"]
    assert report["workflow_id"] == workflow_id and workflow_id.startswith("batch-")
    assert report["workflow_url"] == f"http://temporal-ui.test:8080/namespaces/default/workflows/{workflow_id}"
    assert report["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    [delivery] = report["deliveries"]
    assert (delivery["event_type"], delivery["state"]) == ("request.done", "succeeded")
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 200]
    assert [a["trigger"] for a in delivery["attempts"]] == ["first", "retry"]

    code, text, err = await show(settings, request_id)
    assert code == 0, err
    assert f"request   {request_id}" in text and "status    DONE (version 3)" in text
    assert report["workflow_url"] in text and "4bf92f3577b34da6a3ce929d0e0e4736" in text
    assert "request.processing" in text and "#2 retry" in text


async def test_show_of_an_unknown_or_malformed_id_is_one_line_and_exit_1(settings: Settings) -> None:
    for given, fragment in ((str(uuid.uuid4()), "no request has id"), ("not-an-id", "is not a request id")):
        code, out, err = await show(settings, given)
        assert code == 1 and out == ""
        assert len(err.strip().splitlines()) == 1 and fragment in err, err
