"""Batches on real Postgres and Temporal: how the claim forms them, how they start, how they end when they cannot."""

from __future__ import annotations

import uuid

import asyncpg
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow.contracts import PROCESS_BATCH_WORKFLOW, PROCESS_REQUEST_WORKFLOW, TOPIC_ACCEPTED, TOPIC_BATCH
from ackflow.events import OutboxEvent
from ackflow.handlers import HandlerRegistry
from ackflow.roles import relay_routes
from ackflow.settings import MAX_BATCH, Settings
from ackflow.temporal import REQUEST_IDS_KEY
from activities.request_activities import LOCAL_BUDGET_SECONDS
from activities.worker import register_kinds
from outbox_cdc import DeadLetterLimits, OutboxRelay
from tests.conftest import Tenant
from tests.helpers import assert_eventually
from tests.integration.test_admission import ackflow_cli
from tests.integration.test_relay import accept_requests, executions_of, relaying, worker

__all__ = ["worker"]  # the fixture


def relay(settings: Settings, temporal: Client, redis: Redis, pool: asyncpg.Pool, **options: object) -> OutboxRelay:
    return OutboxRelay(pool, settings.database_url, relay_routes(temporal, redis, settings, pool), **options)  # type: ignore[arg-type]


async def statuses(pool: asyncpg.Pool, ids: list[str]) -> dict[str, str]:
    rows = await pool.fetch("SELECT id::text, status FROM requests WHERE id = ANY($1::uuid[])", ids)
    return {row["id"]: row["status"] for row in rows}


async def all_done(pool: asyncpg.Pool, ids: list[str]) -> bool:
    return set((await statuses(pool, ids)).values()) == {"DONE"}


async def test_the_claim_groups_the_requests_it_admits_by_task_queue_into_batches_of_at_most_batch_max(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    await register_kinds(pool, registry, settings.task_queue)
    echoes = await accept_requests(pool, tenant, 7, kind="echo")
    await pool.execute("UPDATE handler_kinds SET task_queue = 'elsewhere' WHERE kind = 'fail'")
    elsewhere = await accept_requests(pool, tenant, 2, kind="fail")

    claimed = await relay(settings, temporal, redis, pool, batch_max=3)._claim()

    batches = [event for event in claimed if event.topic == TOPIC_BATCH]
    by_queue = sorted((event.payload["task_queue"], len(event.payload["requests"])) for event in batches)
    assert by_queue == [("elsewhere", 2), (settings.task_queue, 1), (settings.task_queue, 3), (settings.task_queue, 3)]
    assert not await pool.fetchval("SELECT count(*) FROM outbox WHERE topic = 'request.accepted'")
    members = [str(m["request_id"]) for event in batches for m in event.payload["requests"]]
    assert sorted(members) == sorted(echoes + elsewhere), "every admitted request is in exactly one batch"
    first = next(b for b in batches if str(b.payload["requests"][0]["request_id"]) == echoes[0])
    assert [str(m["request_id"]) for m in first.payload["requests"]] == echoes[:3], "the oldest first, in order"
    recorded = await pool.fetch("SELECT id::text, workflow_id FROM requests")
    workflow_ids = {event.payload["workflow_id"] for event in batches}
    assert {row["workflow_id"] for row in recorded} == workflow_ids and len(workflow_ids) == 4
    assert all(event.claimed_until is not None for event in batches), "a batch row is held under the claim's lease"


async def test_a_full_batch_runs_as_one_workflow_that_operators_find_by_any_of_its_request_ids(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    ids = await accept_requests(pool, tenant, MAX_BATCH)
    assert await relay(settings, temporal, redis, pool, batch_max=MAX_BATCH).relay_batch() == MAX_BATCH
    await assert_eventually(lambda: all_done(pool, ids), timeout=30, message="the batch did not finish")

    [workflow_id] = {row["workflow_id"] for row in await pool.fetch("SELECT workflow_id FROM requests")}
    description = await temporal.get_workflow_handle(workflow_id).describe()
    assert description.workflow_type == PROCESS_BATCH_WORKFLOW
    assert sorted(description.typed_search_attributes.get(REQUEST_IDS_KEY, [])) == sorted(ids)
    for request_id in (ids[0], ids[-1]):
        assert await executions_of(temporal, request_id) == 1
    # PROCESSING for the whole batch was one statement: one transaction wrote every event of it.
    writers = await pool.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM request_events WHERE topic = 'request.processing'"
    )
    assert writers == 1
    done_writers = await pool.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM request_events WHERE topic = 'request.done'"
    )
    assert done_writers < MAX_BATCH / 2, (
        f"{done_writers} transactions recorded {MAX_BATCH} outcomes that ended together"
    )


async def test_an_accepted_row_an_older_relay_admitted_is_started_as_that_relay_would_have(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    """An older relay claims with the three-argument claim and starts `request-<id>`; if it died after
    that start, a batch of the request would run it a second time. So its row is not batched."""
    [request_id] = await accept_requests(pool, tenant, 1)
    await pool.fetch("SELECT * FROM ackflow_claim_outbox(10, NULL, 30)")  # an older relay claims, then dies
    await pool.execute("UPDATE outbox SET claimed_until = now() - interval '1 second'")

    topics: list[str] = []
    routes = relay_routes(temporal, redis, settings, pool)

    async def seen(event: OutboxEvent) -> None:
        topics.append(event.topic)
        await routes[TOPIC_ACCEPTED](event)

    async with relaying(OutboxRelay(pool, settings.database_url, {**routes, TOPIC_ACCEPTED: seen}, poll_seconds=0.1)):
        await assert_eventually(lambda: all_done(pool, [request_id]), timeout=30, message="it never ran")
    assert topics == [TOPIC_ACCEPTED]
    description = await temporal.get_workflow_handle(f"request-{request_id}").describe()
    assert description.workflow_type == PROCESS_REQUEST_WORKFLOW


async def test_a_batch_that_can_never_start_fails_every_request_in_it_with_why(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    ids = await accept_requests(pool, tenant, 3)
    routes = relay_routes(temporal, redis, settings, pool)

    async def unreachable(event: OutboxEvent) -> None:
        raise ConnectionError("Temporal is unreachable")

    failing = OutboxRelay(
        pool,
        settings.database_url,
        {**routes, TOPIC_BATCH: unreachable},
        poll_seconds=0.1,
        dead_letters=DeadLetterLimits(max_attempts=2),
    )
    async with relaying(failing):
        await assert_eventually(lambda: _all_failed(pool, ids), message="the batch's requests did not all fail")
    errors = await pool.fetch("SELECT error FROM requests")
    assert all(row["error"]["type"] == "DispatchFailed" for row in errors)
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE topic = 'request.batch' AND dead_at IS NOT NULL") == 1


async def test_dropping_a_batch_row_ends_every_request_in_it_failed(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    await register_kinds(pool, registry, settings.task_queue)
    ids = await accept_requests(pool, tenant, 2)
    [batch] = await relay(settings, temporal, redis, pool)._claim()  # claimed, then its relay dies
    assert "dropped" in await ackflow_cli(settings, "outbox", "drop", str(batch.id))
    rows = await pool.fetch("SELECT status, error FROM requests WHERE id = ANY($1::uuid[])", ids)
    assert [(row["status"], row["error"]["type"]) for row in rows] == [("FAILED", "DispatchDropped")] * 2


async def test_the_reconciler_dispatches_again_only_a_request_that_no_batch_row_still_holds(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, registry: HandlerRegistry, tenant: Tenant
) -> None:
    from outbox_cdc import Reconciler

    await register_kinds(pool, registry, settings.task_queue)
    [request_id] = await accept_requests(pool, tenant, 1)
    await relay(settings, temporal, redis, pool)._claim()  # its batch row waits to be started
    await pool.execute("UPDATE requests SET admitted_at = now() - interval '1 minute'")
    reconciler = Reconciler(pool, temporal, interval_seconds=0.2, grace_seconds=0)
    assert await reconciler.reconcile_once() == 0, "a relay is about to start it: no second row"
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1
    assert await pool.fetchval("SELECT workflow_id FROM requests WHERE id = $1", uuid.UUID(request_id))


async def _all_failed(pool: asyncpg.Pool, ids: list[str]) -> bool:
    return set((await statuses(pool, ids)).values()) == {"FAILED"}


async def test_a_handler_still_running_after_the_local_budget_is_handed_over_and_ends_once(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, temporal: Client, tenant: Tenant, worker: None
) -> None:
    """A batch's local activity holds its workflow task, so it waits for slow handlers only a few
    seconds: then the handler goes on where it runs, awaited by an activity on that worker's own queue."""
    [slow] = await accept_requests(pool, tenant, 1, kind="nap", payload={"seconds": LOCAL_BUDGET_SECONDS + 2})
    [fast] = await accept_requests(pool, tenant, 1, kind="echo")
    assert await relay(settings, temporal, redis, pool).relay_batch() == 2
    await assert_eventually(lambda: all_done(pool, [fast]), timeout=10, message="the fast one waited")
    # Each kind runs in its own local activity, started side by side: the nap's may not have begun yet.
    assert (await statuses(pool, [slow]))[slow] in ("INIT", "PROCESSING"), "the fast one waited for the slow one"
    await assert_eventually(lambda: all_done(pool, [slow]), timeout=30, message="the slow one never ended")

    workflow_id = await pool.fetchval("SELECT workflow_id FROM requests WHERE id = $1", uuid.UUID(slow))
    handle = temporal.get_workflow_handle(workflow_id)
    await handle.result()
    history = await handle.fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert [(s.activity_type.name, s.task_queue.name.startswith("ackflow-handover-")) for s in scheduled] == [
        ("await_requests", True)
    ], "awaited on its worker's own queue, not run a second time"
    assert await pool.fetchval("SELECT count(*) FROM request_events WHERE topic = 'request.done'") == 2
    completed = [e for e in history.events if e.HasField("workflow_task_completed_event_attributes")]
    assert len(completed) == 2, "the local activity never kept a workflow task open long enough to heartbeat it"
