"""The webhook dispatcher against real Postgres (and Temporal where a hand-off must work): hand-offs
that survive Temporal being away, compare-and-set recording, endpoint limits shared by every process,
fair shares between tenants, and a claim whose cost stays flat with a backlog."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow import devstack
from ackflow.contracts import DeliveryState
from ackflow.db.migrate import available_migrations
from ackflow.db.queries import sql
from ackflow.handlers import HandlerRegistry
from ackflow.settings import Settings
from ackflow.webhook_secrets import new_webhook_secret
from activities.worker import build_worker
from callbacks import EndpointBusy, EndpointSlots, TemporalRetryStarter, WebhookAttempts, WebhookSender
from callbacks.attempts import ON_SCHEDULE, Ownership
from callbacks.dispatcher import StartRetries, WebhookDispatcher
from tests.conftest import Servers, Tenant, api_client, running_roles
from tests.e2e.conftest import FAST_SCHEDULE, receiver
from tests.helpers import assert_eventually
from tests.receiver import Receiver, Reply, running_receiver

__all__ = ["receiver"]  # the fixture


@pytest.fixture
async def http_transport() -> AsyncIterator[httpx.AsyncHTTPTransport]:
    async with httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=200)) as transport:
        yield transport


def make_attempts(pool: asyncpg.Pool, transport: httpx.AsyncHTTPTransport, **slots: float) -> WebhookAttempts:
    """A worker's attempt machinery (each call: another process's own)."""
    return WebhookAttempts(
        pool,
        WebhookSender(transport, allow_private=True),
        EndpointSlots(pool, lease_seconds=slots.pop("lease_seconds", 60), **slots),
        disable_after=timedelta(days=5),
    )


async def endpoint(
    pool: asyncpg.Pool, tenant: Tenant, url: str, *, max_concurrency: int = 10, rate: int | None = None
) -> uuid.UUID:
    endpoint_id = uuid.uuid4()
    await pool.execute(
        sql("create_endpoint"),
        endpoint_id,
        tenant.id,
        url,
        "",
        ["request.*"],
        max_concurrency,
        rate,
        new_webhook_secret(),
    )
    return endpoint_id


async def pending(
    pool: asyncpg.Pool, tenant: Tenant, endpoint_id: uuid.UUID, url: str, count: int = 1
) -> list[uuid.UUID]:
    """`count` pending deliveries of the endpoint, as the fan-out makes them (oldest first)."""
    rows = await pool.fetch(
        "INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, message_id, event_type, url, body, state,"
        "                                next_attempt_at)"
        " SELECT gen_random_uuid(), $1, $2, 'msg_' || gen_random_uuid(), 'request.done', $3, '{}', 'pending',"
        "        now() - interval '1 hour' + n * interval '1 microsecond'"
        "   FROM generate_series(1, $4) AS n ORDER BY n RETURNING id",
        tenant.id,
        endpoint_id,
        url,
        count,
    )
    return [row["id"] for row in rows]


async def delivery(pool: asyncpg.Pool, delivery_id: uuid.UUID) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM webhook_deliveries WHERE id = $1", delivery_id)
    assert row is not None
    return row


async def attempt_codes(pool: asyncpg.Pool, delivery_id: uuid.UUID) -> list[int | None]:
    return [row["status_code"] for row in await pool.fetch(sql("delivery_attempts"), delivery_id)]


@contextlib.asynccontextmanager
async def running(dispatcher: WebhookDispatcher) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def dispatcher(
    settings: Settings, pool: asyncpg.Pool, attempts: WebhookAttempts, starter: StartRetries, **extra: float
) -> WebhookDispatcher:
    return WebhookDispatcher(pool, settings.database_url, attempts, starter, poll_seconds=0.2, **extra)


class UnreachableTemporal:
    """A retry starter whose every start fails as with Temporal down; counts the tries."""

    def __init__(self) -> None:
        self.tries = 0

    async def __call__(
        self, delivery_id: uuid.UUID, attempts_done: int, retry_after: float | None, *, attempt_now: bool = False
    ) -> None:
        self.tries += 1
        raise ConnectionError("Temporal is unreachable")


async def no_hand_off(
    delivery_id: uuid.UUID, attempts_done: int, retry_after: float | None, *, attempt_now: bool = False
) -> None:
    raise AssertionError(f"delivery {delivery_id} was handed off, not attempted")


# --- finding 1: a failed hand-off leaves the delivery claimable -----------------------------------


async def test_a_first_attempt_failing_while_temporal_is_unreachable_is_handed_off_later_and_delivered(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: Redis,
    temporal: Client,
    registry: HandlerRegistry,
    tenant: Tenant,
    receiver: Receiver,
    http_transport: httpx.AsyncHTTPTransport,
) -> None:
    """Temporal down at a failed first attempt once left the delivery `delivering` with no lease for ever,
    and its resend answered 409 for ever."""
    receiver.reply_with(500)
    endpoint_id = await endpoint(pool, tenant, receiver.url())
    [delivery_id] = await pending(pool, tenant, endpoint_id, receiver.url())
    attempts = make_attempts(pool, http_transport)
    down = UnreachableTemporal()

    async with running(dispatcher(settings, pool, attempts, down, handoff_retry_seconds=0.3)):
        await assert_eventually(lambda: _at_least(lambda: down.tries, 3), message="the hand-off was not tried again")
    row = await delivery(pool, delivery_id)
    assert (row["state"], row["attempts"], row["lease_until"]) == (DeliveryState.HANDOFF, 1, None)

    fast = replace(settings, webhook_retry_schedule=FAST_SCHEDULE)
    async with running_roles(fast, pool, redis, temporal, registry, relay=False, worker=False):
        async with api_client(fast, tenant.api_key) as http:
            resent = await http.post(f"/v1/deliveries/{delivery_id}/retry")
    assert resent.status_code == 202, resent.text  # a resend while the hand-off is pending is taken, not a 409

    starter = TemporalRetryStarter(temporal, fast.task_queue, FAST_SCHEDULE)
    async with build_worker(temporal, pool, registry, fast, attempts=attempts):
        async with running(dispatcher(fast, pool, attempts, starter)):
            await assert_eventually(lambda: _state_is(pool, delivery_id, "succeeded"), message="never delivered")
    assert await attempt_codes(pool, delivery_id) == [500, 200]
    assert len({r.webhook_id for r in receiver.received}) == 1 and len(receiver.received) == 2


async def test_a_hand_off_whose_dispatcher_died_is_handed_off_again_not_attempted_again(
    settings: Settings, pool: asyncpg.Pool, tenant: Tenant, receiver: Receiver, http_transport: httpx.AsyncHTTPTransport
) -> None:
    endpoint_id = await endpoint(pool, tenant, receiver.url())
    [delivery_id] = await pending(pool, tenant, endpoint_id, receiver.url())
    # What a dispatcher that died after recording the failed attempt leaves: its hand-off due.
    await pool.execute(
        "UPDATE webhook_deliveries SET state = 'handoff', attempts = 1, retry_after = 7, next_attempt_at = now()"
        " WHERE id = $1",
        delivery_id,
    )
    handed_off: list[tuple[uuid.UUID, int, float | None, bool]] = []

    async def starter(
        delivery_id: uuid.UUID, attempts_done: int, retry_after: float | None, *, attempt_now: bool = False
    ) -> None:
        handed_off.append((delivery_id, attempts_done, retry_after, attempt_now))

    async with running(dispatcher(settings, pool, make_attempts(pool, http_transport), starter)):
        await assert_eventually(lambda: _state_is(pool, delivery_id, DeliveryState.RETRYING), message="not handed off")
    assert handed_off == [(delivery_id, 1, 7.0, False)]
    assert receiver.received == [], "a recorded attempt was made again"


async def test_a_resend_of_a_delivery_on_its_schedule_signals_its_workflow_which_attempts_at_once(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: Redis,
    temporal: Client,
    registry: HandlerRegistry,
    tenant: Tenant,
    receiver: Receiver,
    http_transport: httpx.AsyncHTTPTransport,
) -> None:
    receiver.reply_with(500, 500)
    slow = replace(settings, webhook_retry_schedule=(3600.0,) * 7)  # only a signal can bring attempt 2 soon
    endpoint_id = await endpoint(pool, tenant, receiver.url())
    [delivery_id] = await pending(pool, tenant, endpoint_id, receiver.url())
    attempts = make_attempts(pool, http_transport)
    starter = TemporalRetryStarter(temporal, slow.task_queue, slow.webhook_retry_schedule)

    async with build_worker(temporal, pool, registry, slow, attempts=attempts):
        async with running(dispatcher(slow, pool, attempts, starter)):
            await assert_eventually(
                lambda: _state_is(pool, delivery_id, DeliveryState.RETRYING), message="not handed off"
            )
            async with running_roles(slow, pool, redis, temporal, registry, relay=False, worker=False):
                async with api_client(slow, tenant.api_key) as http:
                    for sent in (2, 3):  # each resend is one attempt now, and the schedule goes on
                        await assert_eventually(lambda s=sent: _attempts_are(pool, delivery_id, s - 1), message="busy")
                        resent = await http.post(f"/v1/deliveries/{delivery_id}/retry")
                        assert resent.status_code == 202, resent.text
                        await assert_eventually(lambda s=sent: _received(receiver, s), message="resend not attempted")
                    await assert_eventually(lambda: _state_is(pool, delivery_id, "succeeded"), message="not recorded")

    assert await attempt_codes(pool, delivery_id) == [500, 500, 200]
    row = await delivery(pool, delivery_id)
    assert (row["state"], row["attempts"]) == ("succeeded", 3)
    description = await temporal.get_workflow_handle(f"webhook-{delivery_id}").describe()
    assert description.status is not None and description.status.name == "COMPLETED"


@pytest.mark.parametrize(
    ("state", "after"),
    [
        ("pending", "pending"),
        ("delivering", None),  # under a lease: it ends soon, so this 409 is never for ever
        ("handoff", "resending"),
        ("resending", "resending"),
        ("retrying", "resending"),
        ("succeeded", "pending"),
        ("failed", "pending"),
    ],
)
async def test_a_resend_is_taken_in_every_state_but_an_attempt_under_way(
    pool: asyncpg.Pool, tenant: Tenant, state: str, after: str | None
) -> None:
    endpoint_id = await endpoint(pool, tenant, "http://127.0.0.1:9/hook")
    [delivery_id] = await pending(pool, tenant, endpoint_id, "http://127.0.0.1:9/hook")
    await pool.execute("UPDATE webhook_deliveries SET state = $2, attempts = 1 WHERE id = $1", delivery_id, state)

    taken = await pool.fetchval(sql("requeue_delivery"), delivery_id, tenant.id)

    row = await delivery(pool, delivery_id)
    assert (taken is not None, row["state"]) == (after is not None, after or state)
    assert row["single_attempt"] is (state in ("succeeded", "failed")), "only a finished delivery gets one attempt"


# --- finding 1: compare-and-set recording ----------------------------------------------------------


@pytest.mark.parametrize("reply", [500, 200], ids=["failure", "success"])
async def test_an_attempt_recorded_late_with_a_stale_attempt_count_changes_nothing(
    pool: asyncpg.Pool, tenant: Tenant, receiver: Receiver, http_transport: httpx.AsyncHTTPTransport, reply: int
) -> None:
    receiver.reply_with(reply)
    endpoint_id = await endpoint(pool, tenant, receiver.url())
    [delivery_id] = await pending(pool, tenant, endpoint_id, receiver.url())
    stale = dict(await pool.fetchrow(sql("delivery_for_attempt"), delivery_id))  # read at attempts = 0
    await pool.execute("UPDATE webhook_deliveries SET state = 'retrying', attempts = 1 WHERE id = $1", delivery_id)
    before = await delivery(pool, delivery_id)
    attempts = make_attempts(pool, http_transport)

    outcome = await attempts.attempt_claimed(stale, trigger="retry", owner=ON_SCHEDULE)

    assert len(receiver.received) == 1  # it was sent: only its record is refused
    assert not outcome.recorded and (outcome.state, outcome.attempt) == (DeliveryState.RETRYING, 1)
    after = await delivery(pool, delivery_id)
    assert (after["state"], after["attempts"], after["last_status"]) == ("retrying", 1, before["last_status"])
    assert await attempt_codes(pool, delivery_id) == []


async def test_an_attempt_is_recorded_only_while_the_delivery_is_in_a_state_its_attempter_owns(
    pool: asyncpg.Pool, tenant: Tenant, receiver: Receiver, http_transport: httpx.AsyncHTTPTransport
) -> None:
    receiver.reply_with(500)
    endpoint_id = await endpoint(pool, tenant, receiver.url())
    [delivery_id] = await pending(pool, tenant, endpoint_id, receiver.url())
    claimed = dict(await pool.fetchrow(sql("delivery_for_attempt"), delivery_id))
    await pool.execute("UPDATE webhook_deliveries SET state = 'succeeded' WHERE id = $1", delivery_id)  # a resend won

    owner = Ownership((DeliveryState.DELIVERING,), DeliveryState.HANDOFF, hold_seconds=60)
    outcome = await make_attempts(pool, http_transport).attempt_claimed(claimed, trigger="first", owner=owner)

    assert not outcome.recorded and outcome.state == "succeeded"
    assert (await delivery(pool, delivery_id))["state"] == "succeeded" and await attempt_codes(pool, delivery_id) == []


# --- finding 5: limits shared by every process, fair shares ----------------------------------------


async def test_another_tenants_delivery_is_attempted_at_once_beside_a_rate_1_endpoints_backlog(
    settings: Settings,
    pool: asyncpg.Pool,
    tenant: Tenant,
    other_tenant: Tenant,
    http_transport: httpx.AsyncHTTPTransport,
) -> None:
    async with running_receiver() as slow, running_receiver() as witness:
        slow_endpoint = await endpoint(pool, tenant, slow.url(), rate=1)
        await pending(pool, tenant, slow_endpoint, slow.url(), count=3000)
        witness_endpoint = await endpoint(pool, other_tenant, witness.url())
        async with running(dispatcher(settings, pool, make_attempts(pool, http_transport), no_hand_off)):
            await assert_eventually(lambda: _received(slow, 1), message="the backlog's endpoint got nothing")
            [late] = await pending(pool, other_tenant, witness_endpoint, witness.url())
            await pool.execute("UPDATE webhook_deliveries SET next_attempt_at = now() WHERE id = $1", late)
            started = asyncio.get_running_loop().time()
            await assert_eventually(lambda: _received(witness, 1), timeout=10, message="starved by the backlog")
            waited = asyncio.get_running_loop().time() - started
            in_flight = await pool.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND state = 'delivering'", slow_endpoint
            )
        assert waited < 2.0, f"the other tenant's first attempt waited {waited:.1f}s"
        assert in_flight <= 2, f"{in_flight} deliveries of a rate-1 endpoint were claimed at once"


async def test_a_dead_endpoint_holding_its_attempts_open_takes_only_its_max_concurrency_of_the_slots(
    settings: Settings,
    pool: asyncpg.Pool,
    tenant: Tenant,
    other_tenant: Tenant,
    receiver: Receiver,
    http_transport: httpx.AsyncHTTPTransport,
) -> None:
    held = asyncio.Event()
    receiver.reply_with(*[Reply(hold=held) for _ in range(200)])  # answers nothing until the end
    dead_endpoint = await endpoint(pool, tenant, receiver.url(), max_concurrency=5)
    await pending(pool, tenant, dead_endpoint, receiver.url(), count=200)
    only_twenty = dispatcher(settings, pool, make_attempts(pool, http_transport), no_hand_off, max_in_flight=20)
    async with running_receiver() as witness, running(only_twenty):
        try:
            await assert_eventually(lambda: _received(receiver, 5), message="the dead endpoint got nothing")
            witness_endpoint = await endpoint(pool, other_tenant, witness.url())
            await pending(pool, other_tenant, witness_endpoint, witness.url(), count=30)
            await assert_eventually(lambda: _received(witness, 15), timeout=3, message="starved by a dead endpoint")
            assert receiver.in_flight == 5 and len(receiver.received) == 5
        finally:
            held.set()


async def test_a_claim_shares_its_batch_between_tenants_not_between_their_endpoints(
    pool: asyncpg.Pool, tenant: Tenant, other_tenant: Tenant
) -> None:
    url = "http://127.0.0.1:9/hook"
    many = [await endpoint(pool, tenant, url) for _ in range(3)]
    one = await endpoint(pool, other_tenant, url)
    for endpoint_id in many:
        await pending(pool, tenant, endpoint_id, url, count=20)
    await pending(pool, other_tenant, one, url, count=20)

    async with pool.acquire() as connection, connection.transaction():
        lanes = [row["lane"] for row in await connection.fetch(sql("lock_webhook_lanes"), None, 100)]
        claimed = await connection.fetch(sql("claim_webhook_deliveries"), lanes, 12, 60.0, 50)

    tenants = [row["tenant_id"] for row in claimed]
    assert (tenants.count(tenant.id), tenants.count(other_tenant.id)) == (6, 6)
    assert sorted(sum(1 for row in claimed if row["endpoint_id"] == e) for e in many) == [2, 2, 2]


async def test_two_dispatchers_together_never_exceed_an_endpoints_max_concurrency(
    settings: Settings, pool: asyncpg.Pool, tenant: Tenant, receiver: Receiver, http_transport: httpx.AsyncHTTPTransport
) -> None:
    held = asyncio.Event()
    receiver.reply_with(*[Reply(hold=held) for _ in range(20)])
    endpoint_id = await endpoint(pool, tenant, receiver.url(), max_concurrency=3)
    delivery_ids = await pending(pool, tenant, endpoint_id, receiver.url(), count=20)
    # Each may hold 10 at once, so each would send its own 3 if the limit were kept per process.
    first = dispatcher(settings, pool, make_attempts(pool, http_transport), no_hand_off, max_in_flight=10)
    second = dispatcher(settings, pool, make_attempts(pool, http_transport), no_hand_off, max_in_flight=10)

    async with running(first), running(second):
        try:
            await assert_eventually(lambda: _received(receiver, 3), message="not three at once")
            # Both claim (poll) several times meanwhile, with slots free in each of them.
            probes = itertools.count(1)
            await assert_eventually(
                lambda: _three_claimed(pool, endpoint_id, next(probes)), message="claims never settled"
            )
            assert receiver.in_flight == 3 and len(receiver.received) == 3
        finally:
            held.set()
        for delivery_id in delivery_ids:
            await assert_eventually(lambda d=delivery_id: _state_is(pool, d, "succeeded"), message="not delivered")
    assert receiver.max_in_flight == 3
    assert len({r.webhook_id for r in receiver.received}) == 20 == len(receiver.received)


async def test_two_dispatchers_together_never_exceed_an_endpoints_rate(
    settings: Settings, pool: asyncpg.Pool, tenant: Tenant, receiver: Receiver, http_transport: httpx.AsyncHTTPTransport
) -> None:
    endpoint_id = await endpoint(pool, tenant, receiver.url(), rate=2)
    delivery_ids = await pending(pool, tenant, endpoint_id, receiver.url(), count=10)
    # Each may hold 5 at once, so each would spend its own tokens if the bucket were kept per process.
    first = dispatcher(settings, pool, make_attempts(pool, http_transport), no_hand_off, max_in_flight=5)
    second = dispatcher(settings, pool, make_attempts(pool, http_transport), no_hand_off, max_in_flight=5)

    async with running(first), running(second):
        for delivery_id in delivery_ids:
            await assert_eventually(lambda d=delivery_id: _state_is(pool, d, "succeeded"), message="not delivered")

    arrivals = sorted(r.at for r in receiver.received)
    assert len(arrivals) == 10
    # A bucket of 2 a second with a one-second burst: any 5 arrivals span more than a second, and 10 four.
    spans = [later - earlier for earlier, later in zip(arrivals, arrivals[4:], strict=False)]
    assert min(spans) > 0.9, f"5 arrivals within {min(spans):.2f}s at 2/s"
    assert arrivals[-1] - arrivals[0] > 3.5, f"10 deliveries at 2/s took only {arrivals[-1] - arrivals[0]:.2f}s"


async def test_a_retry_attempt_waits_for_a_send_slot_held_by_another_process(
    pool: asyncpg.Pool, tenant: Tenant, receiver: Receiver, http_transport: httpx.AsyncHTTPTransport
) -> None:
    endpoint_id = await endpoint(pool, tenant, receiver.url(), max_concurrency=1)
    busy, retried = await pending(pool, tenant, endpoint_id, receiver.url(), count=2)
    await pool.execute(  # another worker's attempt of the endpoint is under way
        "UPDATE webhook_deliveries SET state = 'delivering', lease_until = now() + interval '1 minute' WHERE id = $1",
        busy,
    )
    await pool.execute("UPDATE webhook_deliveries SET state = 'retrying', attempts = 1 WHERE id = $1", retried)
    attempts = make_attempts(pool, http_transport, max_wait_seconds=0.5)

    with pytest.raises(EndpointBusy):
        await attempts.attempt(retried, trigger="retry", now=datetime.now(UTC))
    assert receiver.received == []

    await pool.execute("UPDATE webhook_deliveries SET lease_until = NULL WHERE id = $1", busy)
    outcome = await attempts.attempt(retried, trigger="retry", now=datetime.now(UTC))
    assert (outcome.state, outcome.attempt, len(receiver.received)) == ("succeeded", 2, 1)


async def test_a_retry_attempt_spends_a_token_of_its_endpoints_shared_bucket(
    pool: asyncpg.Pool, tenant: Tenant, receiver: Receiver, http_transport: httpx.AsyncHTTPTransport
) -> None:
    endpoint_id = await endpoint(pool, tenant, receiver.url(), rate=1)
    [retried] = await pending(pool, tenant, endpoint_id, receiver.url())
    await pool.execute("UPDATE webhook_deliveries SET state = 'retrying', attempts = 1 WHERE id = $1", retried)
    # Another process just spent the endpoint's only token.
    await pool.execute(
        "UPDATE webhook_endpoint_buckets SET tokens = 0, refilled_at = now() WHERE endpoint_id = $1", endpoint_id
    )
    attempts = make_attempts(pool, http_transport, max_wait_seconds=0.3)

    with pytest.raises(EndpointBusy):
        await attempts.attempt(retried, trigger="retry", now=datetime.now(UTC))
    assert receiver.received == []
    outcome = await make_attempts(pool, http_transport).attempt(retried, trigger="retry", now=datetime.now(UTC))
    assert outcome.state == "succeeded" and len(receiver.received) == 1


async def test_a_claims_cost_stays_flat_from_a_small_backlog_to_a_large_one(
    pool: asyncpg.Pool, tenant: Tenant, other_tenant: Tenant
) -> None:
    """One endpoint's backlog grows from 100 to 20,000 due deliveries beside six other endpoints: the
    claim (finding the lanes, then taking what each may send) must read about the same pages."""
    url = "http://127.0.0.1:9/hook"
    lanes = [await endpoint(pool, tenant, url, rate=1)]
    await pending(pool, tenant, lanes[0], url, count=100)
    for owner in itertools.islice(itertools.cycle([tenant, other_tenant]), 6):
        lanes.append(await endpoint(pool, owner, url))
        await pending(pool, owner, lanes[-1], url, count=50)
    await pool.execute("ANALYZE webhook_deliveries")
    small = await _claim_pages(pool)

    await pending(pool, tenant, lanes[0], url, count=20_000)
    await pool.execute("ANALYZE webhook_deliveries")
    large = await _claim_pages(pool)

    for (name, small_pages, _), (_, large_pages, large_plan) in zip(small, large, strict=True):
        assert "Seq Scan on webhook_deliveries" not in large_plan, large_plan
        # Flat but for the B-tree depth: the claimed rows' index entries are rewritten in deeper trees.
        assert large_pages <= small_pages * 1.4 + 30, (
            f"{name} read {small_pages} pages beside a backlog of 100, {large_pages} beside 20,000:\n{large_plan}"
        )
    async with pool.acquire() as connection, connection.transaction():
        found = [row["lane"] for row in await connection.fetch(sql("lock_webhook_lanes"), None, 100)]
        claimed = await connection.fetch(sql("claim_webhook_deliveries"), found, 100, 60.0, 50)
    assert sorted(found) == sorted(lanes)
    per_lane = {lane: sum(1 for row in claimed if row["endpoint_id"] == lane) for lane in lanes}
    assert per_lane[lanes[0]] == 1 and all(per_lane[lane] == 10 for lane in lanes[1:]), per_lane


async def _claim_pages(pool: asyncpg.Pool) -> list[tuple[str, int, str]]:
    """The pages each statement of a claim of 100 reads, in a transaction rolled back after."""
    async with pool.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        try:
            lanes_plan = await _explain(connection, sql("lock_webhook_lanes"), None, 100)
            lanes = [row["lane"] for row in await connection.fetch(sql("lock_webhook_lanes"), None, 100)]
            claim_plan = await _explain(connection, sql("claim_webhook_deliveries"), lanes, 100, 60.0, 50)
        finally:
            await transaction.rollback()
    return [
        ("lock_webhook_lanes", _pages(lanes_plan), lanes_plan),
        ("claim_webhook_deliveries", _pages(claim_plan), claim_plan),
    ]


async def _explain(connection: asyncpg.Connection, query: str, *args: object) -> str:
    rows = await connection.fetch("EXPLAIN (ANALYZE, BUFFERS) " + query, *args)
    return "\n".join(row[0] for row in rows)


def _pages(plan: str) -> int:
    """The pages the whole statement read: the top node's buffers."""
    match = re.search(r"Buffers: shared hit=(\d+)(?: read=(\d+))?", plan)
    assert match, plan
    return int(match[1]) + int(match[2] or 0)


async def _received(receiver: Receiver, count: int) -> bool:
    return len(receiver.received) >= count


async def _attempts_are(pool: asyncpg.Pool, delivery_id: uuid.UUID, count: int) -> bool:
    row = await delivery(pool, delivery_id)
    return bool(row["attempts"] == count and row["state"] == DeliveryState.RETRYING)


async def _state_is(pool: asyncpg.Pool, delivery_id: uuid.UUID, state: str) -> bool:
    return bool((await delivery(pool, delivery_id))["state"] == state)


async def _at_least(value: Callable[[], int], count: int) -> bool:
    return value() >= count


async def _three_claimed(pool: asyncpg.Pool, endpoint_id: uuid.UUID, probe: int) -> bool:
    """The endpoint's claimed deliveries are the three being sent, for 20 probes (a second of polling)."""
    claimed = await pool.fetchval(
        "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1 AND state = 'delivering'", endpoint_id
    )
    assert claimed == 3, f"{claimed} deliveries of a max_concurrency=3 endpoint claimed"
    return probe >= 20


async def test_migration_0010_hands_off_the_deliveries_the_old_hand_off_stranded(servers: Servers) -> None:
    name = f"pre0010_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(devstack.postgres_url(servers.postgres_port, "postgres"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    connection = await asyncpg.connect(devstack.postgres_url(servers.postgres_port, name))
    try:
        for migration in (m for m in available_migrations() if m.version < 10):
            await connection.execute(migration.sql)
        tenant_id, endpoint_id = uuid.uuid4(), uuid.uuid4()
        await connection.execute("INSERT INTO tenants (id, name) VALUES ($1, 'acme')", tenant_id)
        await connection.execute(
            "INSERT INTO webhook_endpoints (id, tenant_id, url, event_types) VALUES ($1, $2, 'http://x/', '{}')",
            endpoint_id,
            tenant_id,
        )
        stranded, leased = uuid.uuid4(), uuid.uuid4()
        for delivery_id, attempts, lease in ((stranded, 1, None), (leased, 0, datetime.now(UTC))):
            await connection.execute(
                "INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, message_id, event_type, url, body, state,"
                " attempts, lease_until) VALUES ($1, $2, $3, 'msg_1', 'request.done', 'http://x/', '{}', 'delivering',"
                " $4, $5)",
                delivery_id,
                tenant_id,
                endpoint_id,
                attempts,
                lease,
            )

        [migration] = [m for m in available_migrations() if m.version == 10]
        await connection.execute(migration.sql)

        rows = {r["id"]: r for r in await connection.fetch("SELECT * FROM webhook_deliveries")}
        assert rows[stranded]["state"] == DeliveryState.HANDOFF and rows[stranded]["next_attempt_at"] <= datetime.now(
            UTC
        )
        assert rows[leased]["state"] == DeliveryState.DELIVERING
        assert rows[leased]["next_attempt_at"] == rows[leased]["lease_until"], "claimable once its lease runs out"
        assert await connection.fetchval("SELECT count(*) FROM webhook_endpoint_buckets") == 1
    finally:
        await connection.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
