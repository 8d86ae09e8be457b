"""Concurrency keys and priority in the relay's admission, on real Postgres and Temporal: at most the
key's limit of a tenant's requests with one key hold it at once, whatever ends them; the others wait
in order out of the claim's reach; the policies cancel what a new request replaces; priority orders
a tenant's waiting requests, and waiting long enough outranks it."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow.contracts import CANCELLED, INIT
from ackflow.db.accept import accept_request
from ackflow.db.transitions import transition, transition_many
from ackflow.ids import new_request_id
from ackflow.settings import Settings
from outbox_cdc import ExpirySweep
from tests.conftest import Tenant, make_tenant
from tests.helpers import assert_eventually
from tests.integration.test_admission import relay_for
from tests.integration.test_relay import accept_requests, installed_claim, relaying, worker

__all__ = ["worker"]  # the fixture


async def accept_keyed(pool: asyncpg.Pool, tenant: Tenant, key: str | None, **options: Any) -> uuid.UUID | None:
    """One request as the gateway accepts it; None if refused (policy skip, key full)."""
    kind = options.pop("kind", "sleep")
    payload = options.pop("payload", {"seconds": 0.3})
    row = await accept_request(pool, new_request_id(), tenant.id, kind, payload, concurrency_key=key, **options)
    assert row is not None
    return None if row["id"] is None else uuid.UUID(str(row["id"]))


async def key_state(pool: asyncpg.Pool, tenant: Tenant, key: str) -> tuple[int, int, int | None]:
    """(requests holding the key, requests waiting for it, what concurrency_slots counts)."""
    row = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE key_slot AND completed_at IS NULL) AS holders,"
        " count(*) FILTER (WHERE status = 'INIT' AND NOT key_slot) AS waiting,"
        " (SELECT taken FROM concurrency_slots WHERE tenant_id = $1 AND key = $2) AS counted"
        " FROM requests WHERE tenant_id = $1 AND concurrency_key = $2",
        tenant.id,
        key,
    )
    return row["holders"], row["waiting"], row["counted"]


async def run_intervals(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> list[tuple[float, float]]:
    """Each request's time PROCESSING: from its request.processing event to its end."""
    rows = await pool.fetch(
        "SELECT extract(epoch FROM min(e.created_at) FILTER (WHERE e.topic = 'request.processing')) AS started,"
        " extract(epoch FROM r.completed_at) AS ended"
        " FROM requests r JOIN request_events e ON e.request_id = r.id WHERE r.id = ANY ($1::uuid[])"
        " GROUP BY r.id, r.completed_at ORDER BY r.id",
        ids,
    )
    return [(float(row["started"]), float(row["ended"])) for row in rows if row["started"] is not None]


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


async def statuses(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    rows = await pool.fetch("SELECT id, status FROM requests WHERE id = ANY ($1::uuid[])", ids)
    return {row["id"]: row["status"] for row in rows}


async def all_ended(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> bool:
    return bool(
        await pool.fetchval("SELECT bool_and(completed_at IS NOT NULL) FROM requests WHERE id = ANY ($1::uuid[])", ids)
    )


@pytest.mark.parametrize("limit", [1, 2])
async def test_no_more_than_the_limit_of_one_key_run_at_once_and_they_start_in_order(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None, limit: int
) -> None:
    keyed = [await accept_keyed(pool, tenant, "customer-1", concurrency_limit=limit) for _ in range(5)]
    other = [await accept_keyed(pool, tenant, "customer-2") for _ in range(2)]
    ids = [i for i in keyed + other if i is not None]
    assert await key_state(pool, tenant, "customer-1") == (limit, 5 - limit, limit)
    assert await pool.fetchval("SELECT ackflow_waiting_for(r) FROM requests r WHERE id = $1", keyed[-1]) == (
        "concurrency_key"
    )

    async with relaying(relay_for(settings, temporal, redis, pool, room=10)):
        await assert_eventually(lambda: all_ended(pool, ids), timeout=90, message="the keyed requests never ended")

    assert set((await statuses(pool, ids)).values()) == {"DONE"}
    intervals = await run_intervals(pool, [i for i in keyed if i is not None])
    assert most_at_once(intervals) <= limit, intervals
    starts = [start for start, _ in intervals]
    assert most_at_once(await run_intervals(pool, [i for i in other if i is not None])) == 1
    if limit == 1:
        assert starts == sorted(starts), "the key's requests did not start in the order they were accepted"
    assert await pool.fetchval("SELECT count(*) FROM concurrency_slots") == 0, "a slot outlived its requests"


async def test_a_kinds_concurrency_limit_applies_when_the_request_gives_none(
    pool: asyncpg.Pool, tenant: Tenant, worker: None
) -> None:
    for _ in range(3):
        await accept_keyed(pool, tenant, "by-kind", kind="nap_in_pairs")
    assert await key_state(pool, tenant, "by-kind") == (2, 1, 2)
    assert await accept_keyed(pool, tenant, "by-request", kind="nap_in_pairs", concurrency_limit=1) is not None
    assert await accept_keyed(pool, tenant, "by-request", kind="nap_in_pairs", concurrency_limit=1) is not None
    assert await key_state(pool, tenant, "by-request") == (1, 1, 1)


async def test_a_cancelled_or_expired_holder_passes_its_slot_on_and_a_cancelled_waiter_takes_none(
    pool: asyncpg.Pool, tenant: Tenant, worker: None
) -> None:
    first, second, third, fourth = [await accept_keyed(pool, tenant, "k") for _ in range(4)]
    assert await key_state(pool, tenant, "k") == (1, 3, 1)

    await transition(pool, third, CANCELLED, (INIT,))  # waiting: its end passes nothing on
    assert await key_state(pool, tenant, "k") == (1, 2, 1)
    await transition(pool, first, CANCELLED, (INIT,))  # the holder: the oldest waiting one gets the slot
    assert await pool.fetchval("SELECT key_slot FROM requests WHERE id = $1", second) is True
    due = await pool.fetchval(
        "SELECT available_at <= now() AND admit_rank <= now() FROM outbox WHERE request_id = $1", second
    )
    assert due is True, "the request given the slot is not due"
    await pool.execute("UPDATE requests SET expires_at = now() WHERE id = $1", second)
    assert await ExpirySweep(pool).sweep() == 1
    assert (await statuses(pool, [second]))[second] == CANCELLED
    assert await pool.fetchval("SELECT key_slot FROM requests WHERE id = $1", fourth) is True
    await transition(pool, fourth, CANCELLED, (INIT,))
    assert await key_state(pool, tenant, "k") == (0, 0, None)


async def test_one_statement_ending_several_requests_of_one_key_passes_each_slot_once(
    pool: asyncpg.Pool, tenant: Tenant, worker: None
) -> None:
    """The slot passes on once the statement has changed all its rows (a BEFORE trigger changed the
    statement's own rows under it): two holders ended together give their slots to the two oldest
    waiting; a waiting request expired with a holder is not given one."""
    holders = [await accept_keyed(pool, tenant, "pair", concurrency_limit=2) for _ in range(2)]
    waiting = [await accept_keyed(pool, tenant, "pair", concurrency_limit=2) for _ in range(3)]
    assert await key_state(pool, tenant, "pair") == (2, 3, 2)

    await transition_many(pool, [{"id": i, "status": CANCELLED} for i in holders], (INIT,))

    assert await key_state(pool, tenant, "pair") == (2, 1, 2)
    given = await pool.fetch("SELECT id FROM requests WHERE id = ANY ($1::uuid[]) AND key_slot", waiting)
    assert sorted(row["id"] for row in given) == waiting[:2]

    await pool.execute("UPDATE requests SET expires_at = now() WHERE id = ANY ($1::uuid[])", waiting[1:])
    assert await ExpirySweep(pool).sweep() == 2  # a holder and the last waiting one, of one key
    assert await key_state(pool, tenant, "pair") == (1, 0, 1)


async def test_accepts_and_ends_of_one_key_racing_on_many_connections_never_exceed_its_limit(
    pool: asyncpg.Pool, tenant: Tenant, worker: None
) -> None:
    """The slots row is what accepts and ends of one key serialise on: whatever the interleaving, the
    key's holders never pass its limit, its count stays true, and no request waits with the key free."""
    limit, accepted, stop = 3, [], asyncio.Event()
    violations: list[tuple[int, int, int | None]] = []

    async def accept_some() -> None:
        for _ in range(40):
            request_id = await accept_keyed(pool, tenant, "hot", concurrency_limit=limit)
            accepted.append(request_id)

    async def end_holders(seed: int) -> None:
        chance = random.Random(seed)
        while not stop.is_set():
            holders = await pool.fetch(
                "SELECT id FROM requests WHERE concurrency_key = 'hot' AND key_slot AND completed_at IS NULL"
            )
            if holders:
                await transition(pool, chance.choice(holders)["id"], CANCELLED, (INIT,))
            else:
                await asyncio.sleep(0.005)

    async def watch() -> None:
        while not stop.is_set():
            holders, waiting, counted = await key_state(pool, tenant, "hot")
            if holders > limit or (counted or 0) > limit:
                violations.append((holders, waiting, counted))
            await asyncio.sleep(0.002)

    enders = [asyncio.create_task(end_holders(seed)) for seed in range(3)]
    watcher = asyncio.create_task(watch())
    await asyncio.gather(accept_some(), accept_some())

    async def drained() -> bool:
        return await key_state(pool, tenant, "hot") == (0, 0, None)

    await assert_eventually(drained, timeout=60, message="requests were left waiting with their key free")
    stop.set()
    await asyncio.gather(*enders, watcher)
    assert violations == []
    assert len(accepted) == 80


async def test_skip_refuses_a_request_whose_key_is_full_and_writes_nothing(
    pool: asyncpg.Pool, tenant: Tenant, worker: None
) -> None:
    holder = await accept_keyed(pool, tenant, "once", concurrency_policy="skip")
    assert holder is not None
    before = await pool.fetchval("SELECT (SELECT count(*) FROM requests) + (SELECT count(*) FROM outbox)")

    assert await accept_keyed(pool, tenant, "once", concurrency_policy="skip") is None

    assert await pool.fetchval("SELECT (SELECT count(*) FROM requests) + (SELECT count(*) FROM outbox)") == before
    assert await key_state(pool, tenant, "once") == (1, 0, 1)
    assert await accept_keyed(pool, tenant, "other", concurrency_policy="skip") is not None  # another key is free


async def test_replace_queued_cancels_the_waiting_requests_and_leaves_the_running_one(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    running = await accept_keyed(pool, tenant, "doc", payload={"seconds": 2})
    queued = [await accept_keyed(pool, tenant, "doc") for _ in range(2)]
    async with relaying(relay_for(settings, temporal, redis, pool, room=10)):

        async def started() -> bool:
            return (await statuses(pool, [running]))[running] == "PROCESSING"

        await assert_eventually(started, timeout=30, message="the first request never started")
        newest = await accept_keyed(pool, tenant, "doc", concurrency_policy="replace_queued")
        ids = [running, *queued, newest]
        await assert_eventually(lambda: all_ended(pool, ids), timeout=60, message="the requests never ended")

    ended = await statuses(pool, ids)
    assert ended[running] == "DONE" and ended[newest] == "DONE", ended
    assert [ended[i] for i in queued] == [CANCELLED, CANCELLED]
    error = await pool.fetchval("SELECT error FROM requests WHERE id = $1", queued[0])
    assert error["type"] == "Superseded" and error["superseded_by"] == str(newest), error
    assert most_at_once(await run_intervals(pool, [running, newest])) == 1


async def test_cancel_running_cancels_the_running_request_and_the_new_one_runs_next(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    running = await accept_keyed(pool, tenant, "sync", payload={"seconds": 120})
    async with relaying(relay_for(settings, temporal, redis, pool, room=10)):

        async def started() -> bool:
            return (await statuses(pool, [running]))[running] == "PROCESSING"

        await assert_eventually(started, timeout=30, message="the first request never started")
        newest = await accept_keyed(pool, tenant, "sync", concurrency_policy="cancel_running")
        assert await pool.fetchval("SELECT key_slot FROM requests WHERE id = $1", newest) is False
        await assert_eventually(
            lambda: all_ended(pool, [running, newest]), timeout=60, message="the new request never ran"
        )

    ended = await statuses(pool, [running, newest])
    assert ended == {running: CANCELLED, newest: "DONE"}
    cancelled_at, started_at = await pool.fetchrow(
        "SELECT (SELECT completed_at FROM requests WHERE id = $1),"
        " (SELECT min(created_at) FROM request_events WHERE request_id = $2 AND topic = 'request.processing')",
        running,
        newest,
    )
    assert started_at >= cancelled_at, "the new request started while the one it cancelled still held the key"


async def test_priority_orders_a_tenants_waiting_requests_and_waiting_long_enough_outranks_it(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    relay = relay_for(settings, temporal, redis, pool, room=1)
    await accept_requests(pool, tenant, 1, kind="sleep", payload={"seconds": 60})
    assert await relay.relay_batch() == 1  # the room is full: what follows waits
    low = [await accept_keyed(pool, tenant, None, priority=5, payload={"seconds": 60}) for _ in range(2)]
    default = await accept_keyed(pool, tenant, None, payload={"seconds": 60})
    high = await accept_keyed(pool, tenant, None, priority=1, payload={"seconds": 60})
    order = await pool.fetch(
        "SELECT request_id FROM outbox WHERE topic = 'request.accepted' AND tenant_id = $1 AND claimed_until IS NULL"
        " ORDER BY admit_rank, id",
        tenant.id,
    )
    assert [row["request_id"] for row in order] == [high, default, *low]

    # Aging: a priority-5 request that waited more than four aging steps (here 10 µs each, less than the
    # time between two accepts) outranks a fresh priority 1.
    aged = await accept_keyed(pool, tenant, None, priority=5, priority_aging_seconds=1e-5, payload={"seconds": 60})
    fresh = await accept_keyed(pool, tenant, None, priority=1, priority_aging_seconds=1e-5, payload={"seconds": 60})
    ranks = await pool.fetch(
        "SELECT request_id FROM outbox WHERE request_id = ANY ($1::uuid[]) ORDER BY admit_rank", [aged, fresh]
    )
    assert [row["request_id"] for row in ranks] == [aged, fresh]

    await pool.execute("UPDATE requests SET completed_at = now(), status = 'DONE' WHERE admitted_at IS NOT NULL")
    await relay.relay_batch()
    admitted = await pool.fetch("SELECT id FROM requests WHERE admitted_at IS NOT NULL AND completed_at IS NULL")
    assert [row["id"] for row in admitted] == [high]


async def test_a_claim_reads_a_few_index_pages_with_thousands_waiting_for_their_keys_in_three_priorities(
    pool: asyncpg.Pool, tenant: Tenant
) -> None:
    """Requests waiting for their key are out of the claim's reach (admit_rank 'infinity'): the claim's
    cost does not grow with them, nor with the priorities the due ones carry."""
    others = [await make_tenant(pool, f"keyed-{i}") for i in range(9)]
    tenants = [tenant.id, *[t.id for t in others]]
    claim = await installed_claim(pool)
    pages: dict[int, int] = {}
    for waiting_for_keys in (1_000, 10_000):
        await pool.execute(
            "INSERT INTO outbox (topic, tenant_id, request_id, available_at, admit_rank)"
            " SELECT 'request.accepted', t, gen_random_uuid(), 'infinity', 'infinity'"
            " FROM unnest($1::uuid[]) AS t, generate_series(1, $2)",
            tenants,
            waiting_for_keys // len(tenants),
        )
        await pool.execute(
            "INSERT INTO outbox (topic, tenant_id, request_id, admit_rank)"
            " SELECT 'request.accepted', t, gen_random_uuid(), now() - (p * interval '1 minute')"
            " FROM unnest($1::uuid[]) AS t, generate_series(0, 2) AS p, generate_series(1, 20)",
            tenants,
        )
        await pool.execute("VACUUM ANALYZE outbox")
        async with pool.acquire() as connection:
            transaction = connection.transaction()
            await transaction.start()
            plan = "\n".join(row[0] for row in await connection.fetch("EXPLAIN (ANALYZE, BUFFERS) " + claim, 10, 5, 30))
            await transaction.rollback()
        assert "Seq Scan on outbox" not in plan, plan
        pages[waiting_for_keys] = int(plan.split("shared hit=", 1)[1].split()[0].rstrip(","))
        await pool.execute("DELETE FROM outbox")
    assert pages[10_000] < pages[1_000] * 1.5 + 20, pages
