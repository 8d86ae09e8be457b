"""After the load: wait until the stack settles, then count what the invariants forbid.

Everything is read from the suite's own Postgres (scoped to the scenario's tenant) and compared
with what the clients were answered and what the receiver got. `Tally.line()` is the one table
line a scenario prints; `Tally.violations()` is what it asserts on; `diagnose()` is what the lead
needs to match a failure to its cause (delivery states, leases, outbox errors).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg

from ackflow.contracts import STATUS_TOPICS, TERMINAL_STATUSES
from tests.chaos.load import LoadResult
from tests.chaos.receiver import SigningReceiver
from tests.helpers import assert_eventually

HEADER = (
    f"{'scenario':<24} {'accepted':>8} {'lost':>4} {'stuck':>5} {'twice':>5} {'dupkey':>6} "
    f"{'webhooks exp/got':>16} {'2bodies':>7} {'badsig':>6} {'unacc':>5} {'exits':>5} {'secs':>5}"
)


@dataclass
class Tally:
    """The numbers of one scenario."""

    scenario: str
    accepted: int = 0
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    recorded_twice: list[str] = field(default_factory=list)
    keys_with_two_requests: list[str] = field(default_factory=list)
    webhooks_expected: set[str] = field(default_factory=set)
    webhooks_missing: list[str] = field(default_factory=list)
    two_bodies: list[str] = field(default_factory=list)
    bad_signatures: int = 0
    unaccepted: int = 0
    role_exits: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        delivered = len(self.webhooks_expected) - len(self.webhooks_missing)
        webhooks = f"{len(self.webhooks_expected)}/{delivered}"
        return (
            f"{self.scenario:<24} {self.accepted:>8} {len(self.lost):>4} {len(self.stuck):>5} "
            f"{len(self.recorded_twice):>5} {len(self.keys_with_two_requests):>6} {webhooks:>16} "
            f"{len(self.two_bodies):>7} {self.bad_signatures:>6} {self.unaccepted:>5} {self.role_exits:>5} "
            f"{self.seconds:>5.0f}"
        )

    def violations(self) -> list[str]:
        """Each broken invariant, with up to five examples."""
        checks = {
            "lost (202 but no row)": self.lost,
            "stuck non-terminal": self.stuck,
            "result recorded twice": self.recorded_twice,
            "two requests for one idempotency key": self.keys_with_two_requests,
            "webhooks never delivered": self.webhooks_missing,
            "webhook ids seen with two bodies": self.two_bodies,
            "keys never accepted by a retrying client": ["x"] * self.unaccepted,
        }
        found = [f"{len(items)} {what}: {items[:5]}" for what, items in checks.items() if items]
        if self.accepted == 0:
            found.append("nothing was accepted")
        if self.bad_signatures:
            found.append(f"{self.bad_signatures} bad signatures")
        return found


async def wait_until_settled(
    database_url: str, tenant_id: uuid.UUID, load: LoadResult, receiver: SigningReceiver, timeout: float
) -> bool:
    """Wait (bounded) until every accepted request is terminal, the tenant's outbox is empty and
    every expected webhook arrived. False if it did not within `timeout`."""

    async def settled() -> bool:
        try:
            async with _connection(database_url) as connection:
                statuses = await _statuses(connection, tenant_id)
                expected = await _expected_webhooks(connection, tenant_id)
                outbox = await connection.fetchval("SELECT count(*) FROM outbox WHERE tenant_id = $1", tenant_id)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False  # Postgres still restarting: not settled yet
        terminal = all(statuses.get(request_id) in TERMINAL_STATUSES for request_id in load.accepted.values())
        return terminal and outbox == 0 and expected <= receiver.delivered

    try:
        await assert_eventually(settled, timeout=timeout, interval=1.0, message="the stack did not settle")
    except AssertionError:
        return False
    return True


async def tally(
    scenario: str, database_url: str, tenant_id: uuid.UUID, load: LoadResult, receiver: SigningReceiver
) -> Tally:
    """Count every invariant's violations for the scenario's tenant."""
    result = Tally(scenario, accepted=len(load.accepted), unaccepted=len(load.unaccepted))
    async with _connection(database_url) as connection:
        statuses = await _statuses(connection, tenant_id)
        result.webhooks_expected = await _expected_webhooks(connection, tenant_id)
        twice = await connection.fetch(
            "SELECT request_id FROM request_events WHERE tenant_id = $1 AND status = ANY($2::text[])"
            " GROUP BY request_id HAVING count(*) > 1",
            tenant_id,
            sorted(TERMINAL_STATUSES),
        )
        keys = await connection.fetch(
            "SELECT payload->>'key' AS key FROM requests WHERE tenant_id = $1 GROUP BY 1 HAVING count(*) > 1",
            tenant_id,
        )
    result.lost = sorted(rid for rid in load.accepted.values() if rid not in statuses)
    result.stuck = sorted(rid for rid in load.accepted.values() if statuses.get(rid, "DONE") not in TERMINAL_STATUSES)
    result.recorded_twice = sorted(str(row["request_id"]) for row in twice)
    result.keys_with_two_requests = sorted({*(str(row["key"]) for row in keys), *load.keys_with_two_ids()})
    result.webhooks_missing = sorted(result.webhooks_expected - receiver.delivered)
    result.two_bodies = receiver.ids_with_two_bodies()
    result.bad_signatures = receiver.bad_signatures
    return result


async def diagnose(database_url: str, tenant_id: uuid.UUID, result: Tally) -> str:
    """What Postgres says about the stuck requests, the undelivered webhooks and the outbox."""
    async with _connection(database_url) as connection:
        stuck = await connection.fetch(
            "SELECT status, workflow_started_at IS NOT NULL AS started, count(*) FROM requests"
            " WHERE id = ANY($1::uuid[]) GROUP BY 1, 2",
            result.stuck,
        )
        deliveries = await connection.fetch(
            "SELECT state, attempts, lease_until IS NULL AS no_lease, last_status, left(last_error, 120) AS error,"
            " count(*) FROM webhook_deliveries WHERE tenant_id = $1 AND message_id = ANY($2::text[])"
            " GROUP BY 1, 2, 3, 4, 5 ORDER BY 6 DESC LIMIT 20",
            tenant_id,
            result.webhooks_missing,
        )
        no_delivery = await connection.fetchval(
            "SELECT count(*) FROM unnest($2::text[]) m WHERE NOT EXISTS"
            " (SELECT 1 FROM webhook_deliveries d WHERE d.tenant_id = $1 AND d.message_id = m)",
            tenant_id,
            result.webhooks_missing,
        )
        outbox = await connection.fetch(
            "SELECT topic, attempts, left(last_error, 160) AS error, count(*) FROM outbox WHERE tenant_id = $1"
            " GROUP BY 1, 2, 3 ORDER BY 4 DESC LIMIT 20",
            tenant_id,
        )
    lines = [
        "stuck requests by (status, workflow started): " + _rows(stuck),
        f"undelivered webhooks with no delivery row: {no_delivery}",
        "undelivered webhooks by (state, attempts, lease_until NULL, last_status, last_error): " + _rows(deliveries),
        "outbox rows left by (topic, attempts, last_error): " + _rows(outbox),
    ]
    return "\n".join(lines)


def _rows(rows: list[asyncpg.Record]) -> str:
    return "; ".join(str(tuple(row.values())) for row in rows) or "none"


async def _statuses(connection: asyncpg.Connection, tenant_id: uuid.UUID) -> dict[str, str]:
    rows = await connection.fetch("SELECT id, status FROM requests WHERE tenant_id = $1", tenant_id)
    return {str(row["id"]): str(row["status"]) for row in rows}


async def _expected_webhooks(connection: asyncpg.Connection, tenant_id: uuid.UUID) -> set[str]:
    """Every request.* status event of the tenant's requests: each is one webhook to the endpoint."""
    rows = await connection.fetch(
        "SELECT id FROM request_events WHERE tenant_id = $1 AND topic = ANY($2::text[])",
        tenant_id,
        sorted(STATUS_TOPICS),
    )
    return {f"msg_{row['id']}" for row in rows}


@contextlib.asynccontextmanager
async def _connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    """One short connection, closed afterwards."""
    connection = await asyncpg.connect(url, timeout=5)
    try:
        yield connection
    finally:
        await connection.close()
