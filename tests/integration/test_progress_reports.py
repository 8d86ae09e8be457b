"""Progress reports on real Postgres: coalesced, the last one kept, the fraction never moving back unless asked."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from ackflow.contracts import INIT, PROCESSING
from ackflow.db.transitions import transition
from ackflow.handlers import HandlerRegistry
from ackflow.progress_reports import ProgressError, ProgressReports, progress
from ackflow.settings import Settings
from activities.worker import register_kinds
from tests.conftest import Tenant
from tests.helpers import assert_eventually
from tests.integration.test_relay import accept_requests


@pytest.fixture(autouse=True)
async def kinds(pool: asyncpg.Pool, registry: HandlerRegistry, settings: Settings) -> None:
    await register_kinds(pool, registry, settings.task_queue)


async def running_request(pool: asyncpg.Pool, tenant: Tenant) -> str:
    [request_id] = await accept_requests(pool, tenant, 1)
    assert await transition(pool, request_id, PROCESSING, (INIT,)) is not None
    return request_id


async def reports_of(pool: asyncpg.Pool, request_id: str) -> list[dict]:
    rows = await pool.fetch(
        "SELECT data FROM request_events WHERE request_id = $1::uuid AND topic = 'request.progress' ORDER BY id",
        request_id,
    )
    return [row["data"] for row in rows]


async def test_a_hundred_reports_at_once_are_written_as_a_few_and_the_last_is_kept(
    pool: asyncpg.Pool, tenant: Tenant
) -> None:
    request_id = await running_request(pool, tenant)
    async with ProgressReports(pool, interval_seconds=0.25).reporting(request_id):
        for i in range(1, 101):
            await progress(i / 100, f"report {i}")

    written = await reports_of(pool, request_id)
    assert 1 < len(written) <= 3, f"{len(written)} of 100 reports written"
    assert written[-1]["progress"]["message"] == "report 100" and written[-1]["progress"]["fraction"] == 1.0
    versions = [event["version"] for event in written]
    assert versions == sorted(set(versions)), "each written report has the next version"
    outbox = await pool.fetchval("SELECT count(*) FROM outbox WHERE topic = 'request.progress'")
    assert outbox == len(written), "each written report goes to the channels through the outbox"


async def test_reports_further_apart_than_the_interval_are_each_written(pool: asyncpg.Pool, tenant: Tenant) -> None:
    request_id = await running_request(pool, tenant)
    async with ProgressReports(pool, interval_seconds=0.05).reporting(request_id):
        for i in range(1, 6):
            await progress(i / 5, f"step {i}", partial={"step": i})
            await asyncio.sleep(0.08)  # the interval under test: longer than it, so nothing is coalesced
    assert [event["progress"]["partial"] for event in await reports_of(pool, request_id)] == [
        {"step": i} for i in range(1, 6)
    ]


async def test_a_retried_attempt_starting_over_does_not_move_the_fraction_back_unless_it_says_so(
    pool: asyncpg.Pool, tenant: Tenant
) -> None:
    request_id = await running_request(pool, tenant)
    reports = ProgressReports(pool, interval_seconds=0)
    async with reports.reporting(request_id):
        await progress(0.6, "first attempt")
    async with reports.reporting(request_id):  # a retry
        await progress(0.2, "second attempt")
    state = await pool.fetchval("SELECT progress FROM requests WHERE id = $1::uuid", request_id)
    assert (state["fraction"], state["message"]) == (0.6, "second attempt")
    async with reports.reporting(request_id):
        await progress(0.1, "starting over", backwards=True)
    state = await pool.fetchval("SELECT progress FROM requests WHERE id = $1::uuid", request_id)
    assert (state["fraction"], state["message"]) == (0.1, "starting over")


async def test_a_report_for_a_request_not_processing_and_a_cancelled_attempts_pending_one_write_nothing(
    pool: asyncpg.Pool, tenant: Tenant
) -> None:
    [waiting] = await accept_requests(pool, tenant, 1)  # INIT: a stale attempt reporting late
    async with ProgressReports(pool).reporting(waiting):
        await progress(0.5)
    assert await reports_of(pool, waiting) == []

    request_id = await running_request(pool, tenant)

    async def cancelled_attempt() -> None:
        async with ProgressReports(pool, interval_seconds=60).reporting(request_id):
            await progress(0.1, "written")
            await progress(0.2, "pending when cancelled")
            await asyncio.Event().wait()  # until cancelled

    attempt = asyncio.create_task(cancelled_attempt())
    await assert_eventually(lambda: _any_report(pool, request_id), message="the first report was not written")
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    assert [event["progress"]["message"] for event in await reports_of(pool, request_id)] == ["written"]


async def _any_report(pool: asyncpg.Pool, request_id: str) -> bool:
    return bool(await reports_of(pool, request_id))


@pytest.mark.parametrize(
    ("fraction", "message", "partial", "says"),
    [
        (1.5, None, None, "from 0 to 1"),
        (float("nan"), None, None, "a number"),
        (True, None, None, "a number"),
        (0.5, "x" * 501, None, "500 characters"),
        (0.5, "a\x00b", None, "no NUL"),
        (0.5, None, {"blob": "x" * 70_000}, "byte limit"),
        (0.5, None, {"text": "a\u0000b"}, "NUL"),
        (0.5, None, {"thing": object()}, "JSON"),
    ],
)
async def test_a_bad_report_is_refused_with_why_and_writes_nothing(
    pool: asyncpg.Pool, tenant: Tenant, fraction: object, message: object, partial: object, says: str
) -> None:
    request_id = await running_request(pool, tenant)
    with pytest.raises(ProgressError, match=says):
        async with ProgressReports(pool).reporting(request_id):
            await progress(fraction, message, partial=partial)  # type: ignore[arg-type]
    assert await reports_of(pool, request_id) == []


async def test_progress_outside_a_running_request_says_where_to_call_it() -> None:
    with pytest.raises(RuntimeError, match="from a handler"):
        await progress(0.5)
