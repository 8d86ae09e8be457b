"""Catching up from Postgres: paged by rows and bytes, and never going live before it is caught up."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
from redis.asyncio import Redis

from ackflow.live import LiveEvent, encode_live_event, request_channel
from gateway.hub import Hub
from gateway.open_streams import StreamLease
from gateway.replay import Page, Replay
from gateway.stream_items import FLUSH, StreamEvent, StreamItem
from gateway.streams import Streams
from tests.conftest import Tenant
from tests.helpers import assert_eventually, read_sse

INSERT_EVENTS = """
WITH made AS (
    INSERT INTO requests (id, tenant_id, kind, status, payload)
    SELECT gen_random_uuid(), $1, 'echo', 'DONE', '{}' FROM generate_series(1, $2)
    RETURNING id
)
INSERT INTO request_events (request_id, tenant_id, topic, status, version, data)
SELECT id, $1, 'request.done', 'DONE', 1,
       jsonb_build_object('id', id, 'kind', 'echo', 'status', 'DONE', 'version', 1, 'result', $3::text)
  FROM made
RETURNING id
"""


async def insert_done_events(pool: asyncpg.Pool, tenant_id: uuid.UUID, count: int, result: str = "") -> list[int]:
    """`count` finished requests of the tenant, one event each; their event ids in order."""
    return sorted(row["id"] for row in await pool.fetch(INSERT_EVENTS, tenant_id, count, result))


async def test_a_tenant_stream_5000_events_behind_receives_all_of_them_in_order_then_live_ones(
    client: httpx.AsyncClient, pool: asyncpg.Pool, tenant: Tenant
) -> None:
    behind = await insert_done_events(pool, tenant.id, 5000)
    async with client.stream("GET", "/v1/events", params={"last_event_id": 0}) as response:
        assert response.status_code == 200
        # Sent while the stream catches up: its events come after the 5,000, whether it was committed
        # before the stream subscribed (then read from Postgres) or after (then live).
        accepted = await client.post("/v1/requests", json={"kind": "echo", "payload": {"live": True}})
        live_id = accepted.json()["id"]
        events = await asyncio.wait_for(
            read_sse(response, until=lambda e: e.json()["id"] == live_id and e.event == "request.done"), 60
        )
    assert [int(e.id or 0) for e in events[:5000]] == behind, "every missed event, in order, once"
    live = events[5000:]
    assert {e.json()["id"] for e in live} == {live_id}
    assert [e.json()["status"] for e in live] == ["INIT", "PROCESSING", "DONE"]


async def sizes(pool: asyncpg.Pool, page: Page) -> list[int]:
    """The JSON text size of each event's data, as Postgres measures it."""
    ids = [event.id for event in page.events]
    rows = await pool.fetch("SELECT id, octet_length(data::text) AS n FROM request_events WHERE id = ANY($1)", ids)
    by_id = {row["id"]: row["n"] for row in rows}
    return [by_id[i] for i in ids]


async def test_replay_pages_never_hold_more_than_the_byte_budget_and_a_larger_event_comes_alone(
    pool: asyncpg.Pool, tenant: Tenant
) -> None:
    budget = 100_000
    replay = Replay(pool, page_bytes=budget)
    noise = os.urandom(15_000).hex()  # 30 KB of text per result: about three a page
    expected = await insert_done_events(pool, tenant.id, 20, noise)
    expected += await insert_done_events(pool, tenant.id, 1, "x" * 250_000)  # over the budget on its own
    expected += await insert_done_events(pool, tenant.id, 5, noise)

    pages: list[Page] = []
    after, more = 0, True
    while more:
        page = await replay.tenant_page(tenant.id, after)
        pages.append(page)
        after, more = page.events[-1].id, page.more
    assert [event.id for page in pages for event in page.events] == expected
    page_sizes = [await sizes(pool, page) for page in pages]
    assert all(sum(each) <= budget or len(each) == 1 for each in page_sizes), page_sizes
    assert len(pages) >= 9, "pages were cut by bytes, not only by rows"
    assert [250_000 < sum(each) for each in page_sizes].count(True) == 1, "the large event came alone"


async def test_a_request_replay_is_paged_by_rows_and_bytes(pool: asyncpg.Pool, tenant: Tenant) -> None:
    replay = Replay(pool, page_rows=4, page_bytes=100_000)
    request_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO requests (id, tenant_id, kind, status, payload, version)"
        " VALUES ($1, $2, 'echo', 'DONE', '{}', 12)",
        request_id,
        tenant.id,
    )
    await pool.execute(  # versions 7 to 12 carry 30 KB each: three fit in a page of 100 KB, four do not
        """INSERT INTO request_events (request_id, tenant_id, topic, status, version, data)
           SELECT $1, $2, 'request.progress', 'PROCESSING', v,
                  jsonb_build_object('version', v, 'blob', CASE WHEN v > 6 THEN $3::text ELSE '' END)
             FROM generate_series(1, 12) AS v""",
        request_id,
        tenant.id,
        os.urandom(15_000).hex(),
    )

    pages: list[list[int]] = []
    after, more = 0, True
    while more:
        page = await replay.request_page(tenant.id, request_id, after)
        pages.append([event.version for event in page.events])
        after, more = page.events[-1].version, page.more
    assert pages == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11], [12]]


async def test_a_request_stream_fills_a_gap_page_by_page_writing_each_page_before_reading_the_next(
    pool: asyncpg.Pool, redis: Redis, tenant: Tenant
) -> None:
    request_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO requests (id, tenant_id, kind, status, payload) VALUES ($1, $2, 'echo', 'INIT', '{}')",
        request_id,
        tenant.id,
    )
    insert = """INSERT INTO request_events (request_id, tenant_id, topic, status, version, data)
                SELECT $1, $2, 'request.progress', CASE WHEN v = 7 THEN 'DONE' ELSE 'PROCESSING' END, v,
                       jsonb_build_object('version', v) FROM generate_series($3::int, $4::int) AS v
                RETURNING id"""
    await pool.execute(insert, request_id, tenant.id, 1, 1)
    async with Hub(redis) as hub:
        streams = Streams(pool, hub, keepalive_seconds=30, poll_seconds=1, page_rows=2)
        await assert_eventually(lambda: _healthy(hub), message="hub never connected")
        items = streams.follow_request(tenant.id, request_id, 0, StreamLease(tenant.id, uuid.uuid4(), lambda _: None))
        first = await anext(items)
        assert isinstance(first, StreamEvent) and first.version == 1

        last_id = (await pool.fetch(insert, request_id, tenant.id, 2, 7))[-1]["id"]
        done = LiveEvent(last_id, "request.done", str(request_id), str(tenant.id), 7, {"status": "DONE"})
        await redis.publish(request_channel(str(request_id)), encode_live_event(done))  # versions 2-6 missed
        rest = [item async for item in items]

    shown: list[int | str] = []  # the versions streamed, "|" where the stream was told to write
    for item in rest:
        if isinstance(item, StreamEvent):
            shown.append(item.version)
        elif item is FLUSH:
            shown.append("|")
    assert shown[0] == "|" and shown[1:] == [2, 3, "|", 4, 5, "|", 6, 7, "|"], shown


class HandOutHeld(Hub):
    """A hub whose hand-out under way ends only when `release` is set: shows which streams wait for it."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.release = asyncio.Event()
        self.waiters = 0

    async def handed_out(self) -> None:
        self.waiters += 1
        await self.release.wait()


async def test_a_stream_waits_for_the_hand_out_only_when_its_terminal_event_came_live(
    pool: asyncpg.Pool, redis: Redis, tenant: Tenant
) -> None:
    ended, ending = uuid.uuid4(), uuid.uuid4()
    await pool.execute(
        "INSERT INTO requests (id, tenant_id, kind, status, payload, version)"
        " VALUES ($1, $3, 'echo', 'DONE', '{}', 2), ($2, $3, 'echo', 'PROCESSING', '{}', 1)",
        ended,
        ending,
        tenant.id,
    )
    insert = """INSERT INTO request_events (request_id, tenant_id, topic, status, version, data)
                VALUES ($1, $2, $3, $4, $5, jsonb_build_object('version', $5::int)) RETURNING id"""
    await pool.execute(insert, ended, tenant.id, "request.processing", "PROCESSING", 1)
    await pool.execute(insert, ended, tenant.id, "request.done", "DONE", 2)
    await pool.execute(insert, ending, tenant.id, "request.processing", "PROCESSING", 1)
    async with HandOutHeld(redis) as hub:
        streams = Streams(pool, hub, keepalive_seconds=30, poll_seconds=1)
        await assert_eventually(lambda: _healthy(hub), message="hub never connected")

        # Its request had ended: the first read from Postgres has the terminal event, and the stream
        # ends at once, not behind a fan-out under way for other streams.
        items = streams.follow_request(tenant.id, ended, 0, StreamLease(tenant.id, uuid.uuid4(), lambda _: None))
        shown = await asyncio.wait_for(_versions(items), 10)
        assert shown == [1, 2] and hub.waiters == 0

        # The terminal event arrives live: the stream writes it, then ends only once the hand-out is done.
        items = streams.follow_request(tenant.id, ending, 0, StreamLease(tenant.id, uuid.uuid4(), lambda _: None))
        first = await anext(items)
        assert isinstance(first, StreamEvent) and first.version == 1
        rest = asyncio.create_task(_versions(items))
        event_id = await pool.fetchval(insert, ending, tenant.id, "request.done", "DONE", 2)
        done = LiveEvent(event_id, "request.done", str(ending), str(tenant.id), 2, {"status": "DONE"})
        await redis.publish(request_channel(str(ending)), encode_live_event(done))
        await assert_eventually(lambda: _waiting(hub), message="the stream never waited for the hand-out")
        assert not rest.done()
        hub.release.set()
        assert await asyncio.wait_for(rest, 10) == [2]


async def _versions(items: AsyncIterator[StreamItem]) -> list[int]:
    return [item.version async for item in items if isinstance(item, StreamEvent)]


async def _waiting(hub: HandOutHeld) -> bool:
    return hub.waiters == 1


async def _healthy(hub: Hub) -> bool:
    return hub.healthy
