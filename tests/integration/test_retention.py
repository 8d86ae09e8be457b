"""Retention on real Postgres: old finished work goes, in batches, once; everything else stays."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow import devstack
from ackflow.db.pool import POSTGRES_ERRORS, create_pool
from ackflow.db.queries import sql
from ackflow.db.retention import Pruner, RetentionPolicy, prune
from ackflow.handlers import HandlerRegistry
from ackflow.ids import new_request_id
from ackflow.settings import Settings
from tests.conftest import Tenant, migrate_database, running_roles
from tests.e2e.test_cli import run_ackflow
from tests.helpers import assert_eventually

OLD = 40.0  # days: past every default retention (endpoint events: 90, so they are seeded older)
YOUNG = 1.0
FINISHED = ("succeeded", "failed")
UNFINISHED = ("pending", "delivering", "retrying")
TABLES = (
    "requests",
    "request_events",
    "outbox",
    "webhook_deliveries",
    "webhook_attempts",
    "idempotency_keys",
    "webhook_endpoints",
    "webhook_secrets",
    "webhook_endpoint_events",
)


class Seed:
    """Rows as ackflow's own statements leave them, dated `days` ago, `count` at a time."""

    def __init__(self, db: asyncpg.Pool | asyncpg.Connection, tenant_id: uuid.UUID) -> None:
        self.db = db
        self.tenant_id = tenant_id

    async def requests(
        self, status: str, days: float, count: int = 1, *, events: int = 3, ended: bool = True
    ) -> list[uuid.UUID]:
        """Requests created and (if `ended`) completed `days` ago, each with `events` events."""
        ids = [new_request_id() for _ in range(count)]
        # One statement: a pruner running meanwhile (some tests run one) never sees a request without its events.
        await self.db.execute(
            "WITH r AS ("
            "  INSERT INTO requests"
            "    (id, tenant_id, kind, status, version, payload, created_at, updated_at, completed_at)"
            "  SELECT id, $2, 'echo', $3, $4, '{}', t.at, t.at, CASE WHEN $6 THEN t.at END"
            "    FROM unnest($1::uuid[]) AS id, (SELECT now() - make_interval(days => $5) AS at) AS t"
            "  RETURNING id"
            ")"
            " INSERT INTO request_events (request_id, tenant_id, topic, status, version, data)"
            " SELECT r.id, $2, 'request.event', $3, v, '{}' FROM r, generate_series(1, $4) AS v",
            ids,
            self.tenant_id,
            status,
            events,
            int(days),
            ended,
        )
        return ids

    async def inputs(self, request_ids: list[uuid.UUID]) -> None:
        """An input each request's workflow waited for."""
        await self.db.execute(
            "INSERT INTO request_inputs (request_id, name, value) SELECT unnest($1::uuid[]), 'approval', 'true'",
            request_ids,
        )

    async def outbox_rows(self, request_ids: list[uuid.UUID]) -> None:
        """A status event of each request, not yet relayed."""
        await self.db.execute(
            "INSERT INTO outbox (topic, tenant_id, request_id) SELECT 'request.completed', $1, unnest($2::uuid[])",
            self.tenant_id,
            request_ids,
        )

    async def deliveries(
        self,
        state: str,
        days: float,
        count: int = 1,
        *,
        request_id: uuid.UUID | None = None,
        endpoint_id: uuid.UUID | None = None,
        attempts: int = 2,
    ) -> list[uuid.UUID]:
        """Deliveries last changed `days` ago, each with `attempts` attempts."""
        ids = [uuid.uuid4() for _ in range(count)]
        await self.db.execute(
            "INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, request_id, message_id, event_type, url, body,"
            "                                state, attempts, created_at, updated_at)"
            " SELECT id, $2, $3, $4, 'msg_' || id, 'request.completed', 'https://example.com/hook', repeat('x', 2000),"
            "        $5, $6, now() - make_interval(days => $7), now() - make_interval(days => $7)"
            "   FROM unnest($1::uuid[]) AS id",
            ids,
            self.tenant_id,
            endpoint_id,
            request_id,
            state,
            attempts,
            int(days),
        )
        await self.db.execute(
            "INSERT INTO webhook_attempts (delivery_id, attempt, trigger, status_code, latency_ms)"
            " SELECT id, n, 'first', 500, 10 FROM unnest($1::uuid[]) AS id, generate_series(1, $2) AS n",
            ids,
            attempts,
        )
        return ids

    async def idempotency_keys(self, expires_in_days: float, count: int = 1) -> list[str]:
        keys = [f"key-{uuid.uuid4()}" for _ in range(count)]
        await self.db.execute(
            "INSERT INTO idempotency_keys (tenant_id, key, fingerprint, response_status, response_body, expires_at)"
            " SELECT $1, key, '\\x00', 202, '{}', now() + make_interval(secs => $3) FROM unnest($2::text[]) AS key",
            self.tenant_id,
            keys,
            expires_in_days * 86400,
        )
        return keys

    async def endpoints(self, deleted_days: float | None, count: int = 1, *, events: int = 2) -> list[uuid.UUID]:
        """Endpoints (deleted `deleted_days` ago, or live for None), each with a secret and `events` events."""
        ids = [uuid.uuid4() for _ in range(count)]
        deleted_days_ago = None if deleted_days is None else int(deleted_days)
        await self.db.execute(
            "INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, enabled, deleted_at)"
            " SELECT id, $2, 'https://example.com/hook', '{request.*}', $3::int IS NULL,"
            "        now() - make_interval(days => $3::int) FROM unnest($1::uuid[]) AS id",
            ids,
            self.tenant_id,
            deleted_days_ago,
        )
        await self.db.execute(
            "INSERT INTO webhook_secrets (endpoint_id, secret) SELECT unnest($1::uuid[]), 'whsec_x'", ids
        )
        await self.endpoint_events(ids, YOUNG, events)
        return ids

    async def endpoint_events(self, endpoint_ids: list[uuid.UUID], days: float, count: int = 1) -> None:
        await self.db.execute(
            "INSERT INTO webhook_endpoint_events (endpoint_id, tenant_id, type, created_at)"
            " SELECT id, $2, 'webhook.endpoint_disabled', now() - make_interval(days => $3)"
            "   FROM unnest($1::uuid[]) AS id, generate_series(1, $4)",
            endpoint_ids,
            self.tenant_id,
            int(days),
            count,
        )


async def table_sizes(db: asyncpg.Pool | asyncpg.Connection) -> dict[str, int]:
    return {table: int(await db.fetchval(f"SELECT count(*) FROM {table}")) for table in TABLES}


async def present(pool: asyncpg.Pool, table: str, ids: list[uuid.UUID], column: str = "id") -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = ANY($1::uuid[])", ids))


class CountingExecutor:
    """The pool, remembering how many rows each statement deleted (by statement name)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.deleted: defaultdict[str, list[int]] = defaultdict(list)
        self._names = {sql(target.query): target.query for target in RetentionPolicy().targets()}

    async def execute(self, query: str, *args: object) -> str:
        status: str = await self.pool.execute(query, *args)
        self.deleted[self._names[query]].append(int(status.split()[-1]))
        return status


async def test_a_pass_deletes_old_finished_work_and_keeps_young_and_unfinished_work(
    pool: asyncpg.Pool, tenant: Tenant
) -> None:
    seed = Seed(pool, tenant.id)
    old_requests = [*await seed.requests("DONE", OLD), *await seed.requests("FAILED", OLD)]
    old_requests += await seed.requests("CANCELLED", OLD)
    kept_requests = await seed.requests("DONE", YOUNG)
    kept_requests += await seed.requests("PROCESSING", OLD, ended=False)  # never ended: never pruned
    kept_requests += await seed.requests("INIT", OLD, ended=False)
    [with_outbox_row] = await seed.requests("DONE", OLD)
    await seed.outbox_rows([with_outbox_row])
    kept_requests.append(with_outbox_row)
    for state in UNFINISHED:  # a webhook for it is still on its way
        [waiting] = await seed.requests("DONE", OLD)
        await seed.deliveries(state, OLD, request_id=waiting)
        kept_requests.append(waiting)
    for dead_days, requests in ((OLD, old_requests), (YOUNG, kept_requests)):  # dead letters, kept for a while
        [dead_lettered] = await seed.requests("FAILED", OLD)
        await seed.outbox_rows([dead_lettered])
        await pool.execute(
            "UPDATE outbox SET dead_at = now() - make_interval(days => $2) WHERE request_id = $1",
            dead_lettered,
            int(dead_days),
        )
        requests.append(dead_lettered)
    [delivered] = await seed.requests("DONE", OLD)
    await seed.deliveries("succeeded", YOUNG, request_id=delivered)  # finished: its request may go
    old_requests.append(delivered)

    old_deliveries = [*await seed.deliveries("succeeded", OLD), *await seed.deliveries("failed", OLD)]
    kept_deliveries = [*await seed.deliveries("succeeded", YOUNG), *await seed.deliveries("failed", YOUNG)]
    for state in UNFINISHED:
        kept_deliveries += await seed.deliveries(state, OLD)

    expired_keys = await seed.idempotency_keys(-1 / 24, 3)
    live_keys = await seed.idempotency_keys(1 / 24, 2)

    [live_endpoint] = await seed.endpoints(None)
    await seed.endpoint_events([live_endpoint], 100, 4)  # past the 90 days of endpoint events
    [gone_endpoint] = await seed.endpoints(OLD)
    [recently_deleted] = await seed.endpoints(YOUNG)
    [with_a_delivery] = await seed.endpoints(OLD)  # its delivery log outlives it: it waits for that
    kept_deliveries += await seed.deliveries("failed", YOUNG, endpoint_id=with_a_delivery)

    counts = await prune(pool, RetentionPolicy())

    assert counts == {
        "idempotency keys": 3,
        "webhook deliveries": 2,
        "dead outbox rows": 1,
        "requests": 5,
        "submitted batches": 0,
        "endpoint events": 4,
        "deleted endpoints": 1,
    }
    assert await present(pool, "requests", old_requests) == 0
    assert await present(pool, "request_events", old_requests, "request_id") == 0
    assert await present(pool, "requests", kept_requests) == len(kept_requests)
    assert await present(pool, "request_events", kept_requests, "request_id") == 3 * len(kept_requests)
    assert await present(pool, "webhook_deliveries", old_deliveries) == 0
    assert await present(pool, "webhook_attempts", old_deliveries, "delivery_id") == 0
    assert await present(pool, "webhook_deliveries", kept_deliveries) == len(kept_deliveries)
    assert await present(pool, "webhook_attempts", kept_deliveries, "delivery_id") == 2 * len(kept_deliveries)
    keys = {r["key"] for r in await pool.fetch("SELECT key FROM idempotency_keys")}
    assert keys == set(live_keys) and not keys & set(expired_keys)
    endpoints = {r["id"] for r in await pool.fetch("SELECT id FROM webhook_endpoints")}
    assert endpoints == {live_endpoint, recently_deleted, with_a_delivery} and gone_endpoint not in endpoints
    assert await present(pool, "webhook_secrets", [gone_endpoint], "endpoint_id") == 0
    assert await present(pool, "webhook_endpoint_events", [gone_endpoint], "endpoint_id") == 0
    assert await present(pool, "webhook_endpoint_events", [live_endpoint], "endpoint_id") == 2  # the young ones
    assert await prune(pool, RetentionPolicy()) == dict.fromkeys(counts, 0), "a second pass finds nothing left"


async def test_retention_settings_decide_what_is_old(pool: asyncpg.Pool, tenant: Tenant) -> None:
    seed = Seed(pool, tenant.id)
    ten_days = await seed.requests("DONE", 10)
    three_days = await seed.requests("DONE", 3)
    settings = Settings.from_env({"ACKFLOW_RETAIN_REQUESTS_DAYS": "7", "ACKFLOW_RETAIN_DELIVERIES_DAYS": "2"})
    delivery = await seed.deliveries("succeeded", 3)
    counts = await prune(pool, RetentionPolicy.from_settings(settings))
    assert (counts["requests"], counts["webhook deliveries"]) == (1, 1)
    assert await present(pool, "requests", ten_days) == 0 and await present(pool, "requests", three_days) == 1
    assert await present(pool, "webhook_deliveries", delivery) == 0


async def test_a_pass_deletes_in_batches_of_at_most_the_batch_size_until_all_are_gone(
    pool: asyncpg.Pool, tenant: Tenant
) -> None:
    seed = Seed(pool, tenant.id)
    seeded = {
        "prune_requests": len(await seed.requests("DONE", OLD, 30)),
        "prune_webhook_deliveries": len(await seed.deliveries("failed", OLD, 20)),
        "prune_idempotency_keys": len(await seed.idempotency_keys(-1, 15)),
        "prune_deleted_webhook_endpoints": len(await seed.endpoints(OLD, 9, events=0)),
    }
    await seed.endpoint_events(await seed.endpoints(None), 100, 10)
    seeded["prune_webhook_endpoint_events"] = 10
    executor = CountingExecutor(pool)

    await prune(executor, RetentionPolicy(batch_size=7))

    for name, count in seeded.items():
        deleted = executor.deleted[name]
        assert sum(deleted) == count, (name, deleted)
        assert max(deleted) <= 7 and len(deleted) == math.ceil((count + 1) / 7), (name, deleted)
    sizes = await table_sizes(pool)
    assert (sizes["requests"], sizes["request_events"], sizes["webhook_deliveries"]) == (0, 0, 0)
    assert (sizes["webhook_attempts"], sizes["idempotency_keys"], sizes["webhook_endpoints"]) == (0, 0, 1)
    assert sizes["webhook_endpoint_events"] == 2  # the live endpoint's young events


async def test_two_pruners_at_once_delete_each_row_once_without_error(pool: asyncpg.Pool, tenant: Tenant) -> None:
    seed = Seed(pool, tenant.id)
    await seed.requests("DONE", OLD, 300)
    await seed.deliveries("succeeded", OLD, 200)
    await seed.idempotency_keys(-1, 150)
    policy = RetentionPolicy(batch_size=10)

    first, second = await asyncio.gather(prune(pool, policy), prune(pool, policy))

    assert first["requests"] + second["requests"] == 300, (first, second)
    assert first["webhook deliveries"] + second["webhook deliveries"] == 200, (first, second)
    assert first["idempotency keys"] + second["idempotency keys"] == 150, (first, second)
    sizes = await table_sizes(pool)
    assert sizes["requests"] == sizes["webhook_deliveries"] == sizes["idempotency_keys"] == 0, sizes


async def test_a_pruner_skips_rows_another_holds_instead_of_waiting_for_them(
    pool: asyncpg.Pool, tenant: Tenant
) -> None:
    seed = Seed(pool, tenant.id)
    held = await seed.requests("DONE", OLD, 3)
    free = await seed.requests("DONE", OLD, 5)
    async with pool.acquire() as other, other.transaction():  # another pruner, mid-batch
        await other.execute("SELECT FROM requests WHERE id = ANY($1::uuid[]) FOR UPDATE", held)
        counts = await asyncio.wait_for(prune(pool, RetentionPolicy(batch_size=2)), 5)
        assert counts["requests"] == 5
        assert await present(pool, "requests", free) == 0 and await present(pool, "requests", held) == 3
    assert (await prune(pool, RetentionPolicy()))["requests"] == 3, "the next pass takes what was held"


async def test_every_prune_statement_scans_indexes_never_a_whole_table(pool: asyncpg.Pool, tenant: Tenant) -> None:
    """Without the indexes of migration 0011, each batch read every row of its table (and of the outbox)."""
    seed = Seed(pool, tenant.id)
    young = await seed.requests("DONE", YOUNG, 3000, events=1)
    await seed.requests("PROCESSING", OLD, 3000, events=1, ended=False)
    await seed.outbox_rows(young[:2000])
    await seed.inputs(young)
    await seed.outbox_rows([uuid.uuid4() for _ in range(20_000)])  # a backlog: the planner probes its index
    await seed.deliveries("succeeded", YOUNG, 2000, attempts=1)
    await seed.deliveries("pending", OLD, 2000, attempts=1, request_id=young[0])
    await seed.idempotency_keys(1, 3000)
    endpoints = await seed.endpoints(None, 1000, events=3)
    await seed.endpoints(YOUNG, 1000, events=0)
    await seed.deliveries("failed", YOUNG, 1000, attempts=1, endpoint_id=endpoints[0])
    # And a few of each to prune, so that every check and cascade runs.
    old = await seed.requests("DONE", OLD, 20)
    for request_id in old:
        await seed.deliveries("succeeded", YOUNG, request_id=request_id)
    await seed.inputs(old)
    await seed.deliveries("failed", OLD, 20)
    await seed.idempotency_keys(-1, 20)
    await seed.endpoint_events(endpoints[:20], 100)
    await seed.endpoints(OLD, 20, events=2)
    dead = await seed.requests("FAILED", OLD, 20)
    await seed.outbox_rows(dead)
    dead_at = "UPDATE outbox SET dead_at = now() - interval '40 days' WHERE request_id = ANY($1::uuid[])"
    await pool.execute(dead_at, dead)
    batches = (
        "INSERT INTO submitted_batches (id, tenant_id, size, accepted, created_at)"
        " SELECT gen_random_uuid(), $1, 1, 1, now() - make_interval(days => $2) FROM generate_series(1, $3)"
    )
    await pool.execute(batches, tenant.id, YOUNG, 3000)
    await pool.execute(batches, tenant.id, OLD, 20)  # old, their requests pruned: pruned in turn
    await pool.execute("ANALYZE")

    policy = RetentionPolicy()
    whole_tables: dict[str, list[str]] = {}
    for target in policy.targets():
        args = (policy.batch_size,) if target.keep_seconds is None else (policy.batch_size, target.keep_seconds)
        async with pool.acquire() as connection:
            transaction = connection.transaction()
            await transaction.start()
            try:
                before = await _sequential_scans(connection)
                deleted = int((await connection.execute(sql(target.query), *args)).split()[-1])
                after = await _sequential_scans(connection)
            finally:
                await transaction.rollback()
        assert deleted == 20, (target.query, deleted)
        if scanned := sorted(table for table, scans in after.items() if scans > before.get(table, 0)):
            whole_tables[target.query] = scanned
    assert whole_tables == {}, f"these statements read whole tables: {whole_tables}"


async def test_the_relay_role_prunes_in_the_background_every_interval(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: Redis,
    temporal: Client,
    registry: HandlerRegistry,
    tenant: Tenant,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed = Seed(pool, tenant.id)
    first = await seed.requests("DONE", OLD, 3)
    kept = await seed.requests("DONE", YOUNG)
    frequent = replace(settings, prune_interval_seconds=0.2)
    with caplog.at_level(logging.INFO, logger="ackflow.db.retention"):
        async with running_roles(frequent, pool, redis, temporal, registry, gateway=False, worker=False):
            await assert_eventually(lambda: _gone(pool, first), message="the relay did not prune")
            later = await seed.requests("FAILED", OLD)  # the next pass takes it too
            await assert_eventually(lambda: _gone(pool, later), message="the relay pruned only once")
    assert await present(pool, "requests", kept) == 1
    passes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pruned ")]
    assert any("3 requests" in line for line in passes), passes
    assert all("webhook deliveries" in line and "idempotency keys" in line for line in passes), passes


async def test_the_pruner_keeps_pruning_after_postgres_goes_away_and_comes_back(
    server_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = devstack.free_port()
    server = devstack.start_postgres(server_dir, port, fast_unsafe=True)
    try:
        server.wait_until_ready()
        url = devstack.postgres_url(port, "postgres")
        await migrate_database(url)
        pool = await create_pool(url, size=2, timeout=2)
        tenant_id = await pool.fetchval(
            "INSERT INTO tenants (id, name) VALUES (gen_random_uuid(), 'acme') RETURNING id"
        )
        seed = Seed(pool, tenant_id)
        stop = asyncio.Event()
        with caplog.at_level(logging.INFO, logger="ackflow.db.retention"):
            pruning = asyncio.create_task(Pruner(pool, RetentionPolicy(), interval_seconds=0.2).run(stop))
            before = await seed.requests("DONE", OLD)
            await assert_eventually(lambda: _gone(pool, before), message="no pruning before the outage")
            server.stop()
            await assert_eventually(lambda: _logged(caplog, "pruning failed"), message="no failed pass was logged")
            server = devstack.start_postgres(server_dir, port, fast_unsafe=True)
            server.wait_until_ready()
            after = await assert_eventually(lambda: _seeded(seed), message="Postgres never came back")
            await assert_eventually(lambda: _gone(pool, after), message="no pruning after Postgres came back")
            assert not pruning.done(), "the pruner stopped"
            stop.set()
            await asyncio.wait_for(pruning, 5)
        await pool.close()
    finally:
        server.stop()


async def _seeded(seed: Seed) -> list[uuid.UUID] | None:
    """One old request, once the pool reaches the restarted server (its first connections may fail)."""
    try:
        return await seed.requests("DONE", OLD)
    except POSTGRES_ERRORS:
        return None


async def test_ackflow_prune_runs_one_pass_and_prints_its_counts(
    settings: Settings, pool: asyncpg.Pool, tenant: Tenant
) -> None:
    seed = Seed(pool, tenant.id)
    old = await seed.requests("DONE", OLD, 2)
    young = await seed.requests("DONE", YOUNG)
    await seed.idempotency_keys(-1)

    result = await asyncio.to_thread(run_ackflow, "prune", env={"DATABASE_URL": settings.database_url})

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "pruned 1 idempotency keys, 0 webhook deliveries, 0 dead outbox rows, 2 requests, 0 submitted batches,"
        " 0 endpoint events, 0 deleted endpoints"
    )
    assert await present(pool, "requests", old) == 0 and await present(pool, "requests", young) == 1


async def _sequential_scans(connection: asyncpg.Connection) -> dict[str, int]:
    """Sequential scans of each table by this backend (counted across its cascades' queries too)."""
    rows = await connection.fetch("SELECT relname, seq_scan FROM pg_stat_xact_user_tables")
    return {row["relname"]: row["seq_scan"] for row in rows}


async def _gone(pool: asyncpg.Pool, request_ids: list[uuid.UUID]) -> bool:
    return await present(pool, "requests", request_ids) == 0


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records)
