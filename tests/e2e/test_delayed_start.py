"""Delayed start and expiry on the running stack: POST /v1/requests with `delay_seconds` or `run_at`
answers 202 at once with `scheduled_for`, the request stays INIT until then and is never started
earlier, it can be cancelled while it waits (and its outbox row goes with it); `ttl_seconds` or
`expires_at` show as `expires_at`; the client passes them all through. (Requests that do expire:
tests/integration/test_expiry.py and tests/chaos/test_expiry_killed.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from ackflow.client import AckflowClient
from tests.e2e.test_client import sdk
from tests.e2e.test_progress import sse
from tests.helpers import wait_for_status


async def started_no_earlier_than_scheduled(pool: asyncpg.Pool, request_id: str) -> bool:
    """Postgres' own clock: the PROCESSING event was written at or after the scheduled time."""
    started: bool = await pool.fetchval(
        "SELECT e.created_at >= r.scheduled_for FROM request_events e JOIN requests r ON r.id = e.request_id"
        " WHERE e.request_id = $1::uuid AND e.topic = 'request.processing'",
        request_id,
    )
    return started


async def submit(client: httpx.AsyncClient, **schedule: Any) -> dict[str, Any]:
    response = await client.post("/v1/requests", json={"kind": "echo", "payload": {"hi": 1}, **schedule})
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


async def test_delay_seconds_answers_at_once_and_starts_the_request_no_earlier_than_scheduled(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    before = datetime.now(UTC)
    accepted = await submit(client, delay_seconds=2)

    scheduled_for = datetime.fromisoformat(accepted["scheduled_for"])
    assert accepted["status"] == "INIT" and scheduled_for >= before + timedelta(seconds=1.5)
    waiting = (await client.get(f"/v1/requests/{accepted['id']}")).json()
    assert waiting["scheduled_for"] == accepted["scheduled_for"]
    done = await wait_for_status(client, accepted["id"], {"DONE"}, timeout=60)
    assert done["result"] == {"hi": 1} and done["scheduled_for"] == accepted["scheduled_for"]
    assert await started_no_earlier_than_scheduled(pool, accepted["id"])
    events = await sse(client, accepted["id"])
    assert [e["event"] for e in events] == ["request.accepted", "request.processing", "request.done"]
    assert all(e["data"]["scheduled_for"] == accepted["scheduled_for"] for e in events)


async def test_run_at_starts_the_request_at_that_time_and_one_in_the_past_at_once(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    at = datetime.now(UTC) + timedelta(seconds=2)
    accepted = await submit(client, run_at=at.isoformat())
    assert datetime.fromisoformat(accepted["scheduled_for"]) == at
    past = await submit(client, run_at=(datetime.now(UTC) - timedelta(days=1)).isoformat().replace("+00:00", "Z"))

    await wait_for_status(client, past["id"], {"DONE"}, timeout=60)
    await wait_for_status(client, accepted["id"], {"DONE"}, timeout=60)
    assert await started_no_earlier_than_scheduled(pool, accepted["id"])


async def test_a_request_waiting_for_its_time_can_be_cancelled_and_its_outbox_row_goes(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    accepted = await submit(client, delay_seconds=600)

    cancelled = await client.post(f"/v1/requests/{accepted['id']}/cancel")

    assert cancelled.status_code == 202 and cancelled.json()["status"] == "CANCELLED", cancelled.text
    rows = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE request_id = $1::uuid AND topic = 'request.accepted'", accepted["id"]
    )
    assert rows == 0, "the cancelled request's accepted row would wait out its delay"
    events = await sse(client, accepted["id"])
    assert [e["event"] for e in events] == ["request.accepted", "request.cancelled"]


async def test_the_client_submits_with_a_delay_or_a_time(sdk: AckflowClient) -> None:
    delayed = await sdk.submit("echo", {"n": 1}, delay_seconds=1)
    assert delayed.status == "INIT" and delayed.scheduled_for is not None
    timed = await sdk.submit("echo", {"n": 2}, run_at=datetime.now(UTC) + timedelta(seconds=1))
    assert timed.scheduled_for is not None

    for accepted in (delayed, timed):
        final = await sdk.wait(accepted.id, timeout=60)
        assert final.status == "DONE" and final.scheduled_for == accepted.scheduled_for


__all__ = ["sdk"]  # the fixture


async def test_a_request_with_an_expiry_it_meets_runs_to_done_and_shows_its_expires_at(
    client: httpx.AsyncClient, sdk: AckflowClient
) -> None:
    accepted = await submit(client, ttl_seconds=600)
    expires_at = datetime.fromisoformat(accepted["expires_at"])
    assert timedelta(seconds=590) < expires_at - datetime.now(UTC) <= timedelta(seconds=600)
    done = await wait_for_status(client, accepted["id"], {"DONE"}, timeout=60)
    assert done["expires_at"] == accepted["expires_at"]

    via_client = await sdk.submit("echo", {}, expires_at=datetime.now(UTC) + timedelta(minutes=5))
    assert via_client.expires_at is not None
    assert (await sdk.wait(via_client.id, timeout=60)).status == "DONE"
