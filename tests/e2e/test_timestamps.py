"""One timestamp form on every channel: a request's times read the same from GET, long poll, SSE,
WebSocket, the tenant stream and its webhooks, in the form ackflow.timestamps defines."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
import websockets

from ackflow.settings import Settings
from ackflow.timestamps import wire_timestamp
from tests.helpers import assert_eventually, read_sse, wait_for_status
from tests.receiver import Receiver

WIRE_FORM = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")
TIMES = ("created_at", "updated_at", "completed_at")


def times(state: dict[str, Any]) -> dict[str, Any]:
    return {name: state[name] for name in TIMES}


async def test_a_requests_times_read_the_same_on_every_channel(
    http: httpx.AsyncClient, receiver: Receiver, settings: Settings
) -> None:
    created = await http.post("/v1/webhooks", json={"url": receiver.url("/all"), "event_types": ["request.*"]})
    secret = created.json()["secret"]
    async with http.stream("GET", "/v1/events") as tenant_stream:
        accepted = (await http.post("/v1/requests", json={"kind": "echo", "payload": {"n": 1}})).json()
        request_id = accepted["id"]
        tenant_events = await asyncio.wait_for(
            read_sse(tenant_stream, until=lambda e: e.event == "request.done" and e.json()["id"] == request_id), 30
        )
    await wait_for_status(http, request_id, {"DONE"})

    got = (await http.get(f"/v1/requests/{request_id}")).json()
    assert all(WIRE_FORM.match(got[name]) for name in TIMES), got
    long_polled = (await http.get(f"/v1/requests/{request_id}", params={"wait": 5})).json()
    async with http.stream("GET", f"/v1/requests/{request_id}/events") as response:
        sse = await read_sse(response)
    ws_url = f"ws://127.0.0.1:{settings.http_port}{accepted['links']['events'].replace('/events?', '/ws?')}"
    async with websockets.connect(ws_url) as socket:
        ws = [json.loads(raw) async for raw in socket]
    done = await assert_eventually(lambda: _webhook(receiver, secret, "request.done"), message="no webhook")

    assert times(long_polled) == times(got)
    assert times(sse[-1].json()) == times(got)
    assert times(next(m for m in ws if m["event"] == "request.done")["data"]) == times(got)
    assert times(tenant_events[-1].json()) == times(got)
    assert times(done["data"]) == times(got) and done["timestamp"] == got["updated_at"]
    accepted_event = sse[0].json()
    assert accepted_event["created_at"] == got["created_at"] and WIRE_FORM.match(accepted_event["updated_at"])


async def test_the_webhooks_api_and_its_test_event_write_times_in_the_same_form(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    created = await http.post("/v1/webhooks", json={"url": receiver.url("/test"), "event_types": ["request.*"]})
    endpoint = created.json()
    assert WIRE_FORM.match(endpoint["created_at"]), endpoint
    assert (await http.post(f"/v1/webhooks/{endpoint['id']}/test")).status_code == 202
    sent = await assert_eventually(lambda: _webhook(receiver, endpoint["secret"], "webhook.test"), message="no test")
    assert WIRE_FORM.match(sent["timestamp"]), sent
    deliveries = (await http.get(f"/v1/webhooks/{endpoint['id']}/deliveries")).json()["items"]
    assert deliveries and all(WIRE_FORM.match(d["created_at"]) for d in deliveries), deliveries


async def test_postgres_writes_a_time_exactly_as_python_does_in_any_session_time_zone(pool: asyncpg.Pool) -> None:
    base = datetime(2026, 12, 2, 23, 59, 6, tzinfo=UTC)
    moments = [base, base.replace(microsecond=250000), base.replace(microsecond=250018), base.replace(microsecond=1)]
    moments.append(base.astimezone(timezone(timedelta(hours=5, minutes=30))).replace(microsecond=999999))
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SET LOCAL TIME ZONE 'America/New_York'")
        written = [await connection.fetchval("SELECT ackflow_timestamp($1)", moment) for moment in moments]
    assert written == [wire_timestamp(moment) for moment in moments]
    assert written[0] == "2026-12-02T23:59:06Z" and written[2] == "2026-12-02T23:59:06.250018Z"


async def _webhook(receiver: Receiver, secret: str, event_type: str) -> dict[str, Any] | None:
    bodies = [r.verify(secret) for r in receiver.received]
    return next((body for body in bodies if body["type"] == event_type), None)
