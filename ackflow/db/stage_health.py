"""Each stage's health read from Postgres in one statement: what the relay's stage gauges and
`ackflow status` show.

The figures are the durable truth, shared by every process, so any one reader sees them all:
outbox rows and the age of the oldest by topic, dead letters, requests in flight and waiting for
admission by tenant, webhook deliveries by state (succeeded ones are not counted: they are most
rows and need no one), and webhook endpoints disabled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from ackflow.contracts import DeliveryState
from ackflow.db.queries import sql

# The delivery states reported, each even at 0: every state but succeeded.
REPORTED_DELIVERY_STATES = tuple(state.value for state in DeliveryState if state != DeliveryState.SUCCEEDED)


@dataclass(frozen=True)
class TopicBacklog:
    """Outbox rows of one topic not yet relayed (dead letters aside), and the oldest's age."""

    rows: int
    oldest_age_seconds: float


@dataclass(frozen=True)
class StageHealth:
    """A snapshot of every stage. Tenants appear by name, only those with requests in flight or waiting."""

    outbox: dict[str, TopicBacklog] = field(default_factory=dict)
    dead_letters: int = 0
    in_flight: dict[str, int] = field(default_factory=dict)
    waiting_admission: dict[str, int] = field(default_factory=dict)
    oldest_admission_wait_seconds: float = 0.0
    deliveries: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REPORTED_DELIVERY_STATES, 0))
    endpoints_disabled: int = 0


async def read_stage_health(db: asyncpg.Pool | asyncpg.Connection) -> StageHealth:
    """Every stage's figures now."""
    outbox: dict[str, TopicBacklog] = {}
    by_stage: dict[str, dict[str, int]] = {"in_flight": {}, "waiting_admission": {}, "delivery_states": {}}
    totals = {"dead_letters": 0, "endpoints_disabled": 0}
    oldest_wait = 0.0
    for row in await db.fetch(sql("stage_health")):
        stage, key, count, oldest = row["stage"], row["key"], int(row["n"]), row["oldest"]
        if stage == "outbox_rows":
            outbox[key] = TopicBacklog(count, max(0.0, oldest or 0.0))
        elif stage in by_stage:
            by_stage[stage][key] = count
        else:
            totals[stage] = count
        if stage == "waiting_admission":
            oldest_wait = max(oldest_wait, oldest or 0.0)
    return StageHealth(
        outbox=outbox,
        dead_letters=totals["dead_letters"],
        in_flight=by_stage["in_flight"],
        waiting_admission=by_stage["waiting_admission"],
        oldest_admission_wait_seconds=oldest_wait,
        deliveries={**dict.fromkeys(REPORTED_DELIVERY_STATES, 0), **by_stage["delivery_states"]},
        endpoints_disabled=totals["endpoints_disabled"],
    )
