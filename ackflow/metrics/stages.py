"""The stage-health gauges, set from one Postgres snapshot (ackflow/db/stage_health.py) when scraped.

Only the relay role registers this refresher: the figures are global (every process reads the same
rows), so one kind of role reporting them is enough, and no gateway or worker adds to Postgres' load
for them. With several relays, each reports the same figures: aggregate them with max(), not sum().
A snapshot that fails or times out sets ackflow_dependency_up{dependency="postgres"} to 0 and leaves
the gauges at their last values.
"""

from __future__ import annotations

import asyncpg

from ackflow.contracts import EVENT_TOPICS, TOPIC_ACCEPTED, TOPIC_BATCH, TOPIC_CANCEL_REQUESTED, TOPIC_INPUT
from ackflow.db.stage_health import StageHealth, read_stage_health
from ackflow.metrics.catalogue import (
    ADMISSION_OLDEST_WAIT,
    DELIVERIES,
    DEPENDENCY_UP,
    OUTBOX_DEAD_LETTERS,
    OUTBOX_OLDEST_AGE,
    OUTBOX_ROWS,
    REQUESTS_IN_FLIGHT,
    REQUESTS_WAITING_ADMISSION,
    WEBHOOK_ENDPOINTS_DISABLED,
)
from ackflow.metrics.scrape import Refresher

# Reported even at 0, so an alert on a topic's age has a series before its first row.
KNOWN_TOPICS = (TOPIC_ACCEPTED, TOPIC_BATCH, TOPIC_CANCEL_REQUESTED, TOPIC_INPUT, *sorted(EVENT_TOPICS))


def publish_stage_health(health: StageHealth) -> None:
    """Set every stage gauge from `health`. Tenants without requests in flight or waiting drop out
    (cleared and set with no await between, so no scrape sees them half-way)."""
    for topic in (*KNOWN_TOPICS, *(t for t in health.outbox if t not in KNOWN_TOPICS)):
        backlog = health.outbox.get(topic)
        OUTBOX_ROWS.labels(topic=topic).set(backlog.rows if backlog else 0)
        OUTBOX_OLDEST_AGE.labels(topic=topic).set(backlog.oldest_age_seconds if backlog else 0.0)
    OUTBOX_DEAD_LETTERS.set(health.dead_letters)
    REQUESTS_IN_FLIGHT.clear()
    for tenant, count in health.in_flight.items():
        REQUESTS_IN_FLIGHT.labels(tenant=tenant).set(count)
    REQUESTS_WAITING_ADMISSION.clear()
    for tenant, count in health.waiting_admission.items():
        REQUESTS_WAITING_ADMISSION.labels(tenant=tenant).set(count)
    ADMISSION_OLDEST_WAIT.set(health.oldest_admission_wait_seconds)
    for state, count in health.deliveries.items():
        DELIVERIES.labels(state=state).set(count)
    WEBHOOK_ENDPOINTS_DISABLED.set(health.endpoints_disabled)


def stage_health_refresher(pool: asyncpg.Pool) -> Refresher:
    """The relay's scrape-time refresher: one snapshot, published; Postgres marked down if it fails."""

    async def refresh() -> None:
        try:
            health = await read_stage_health(pool)
        except BaseException:  # a timeout (the scrape's bound) or Postgres away
            DEPENDENCY_UP.labels(dependency="postgres").set(0)
            raise
        publish_stage_health(health)

    return refresh
