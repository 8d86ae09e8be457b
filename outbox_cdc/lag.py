"""When an outbox row's event was committed, for the relay's lag (ackflow_relay_lag_seconds).

The claim does not return a row's created_at, and needs none: an accepted row's request id is a
UUIDv7 (ackflow/ids.py) minted at its accept, and a batch row's request id is its oldest member's, so
a batch's lag runs from its oldest request's accept (the row itself is made at the claim, which
would hide the wait). A status row's payload is the request's state, whose `updated_at` is the
transaction that wrote the row. A row carrying no time (a cancel) is not measured.
"""

from __future__ import annotations

import time
from datetime import datetime

from ackflow.contracts import EVENT_TOPICS, TOPIC_ACCEPTED, TOPIC_BATCH
from ackflow.events import OutboxEvent
from ackflow.metrics import RELAY_LAG


def committed_at(event: OutboxEvent) -> float | None:
    """The Unix time the row's event was committed (to the millisecond), or None if it does not say."""
    if event.topic in (TOPIC_ACCEPTED, TOPIC_BATCH):
        if event.request_id.version != 7:
            return None
        return (event.request_id.int >> 80) / 1000.0
    if event.topic in EVENT_TOPICS:
        updated_at = event.payload.get("updated_at")
        if isinstance(updated_at, str):
            try:
                return datetime.fromisoformat(updated_at).timestamp()
            except ValueError:
                return None
    return None


def observe_lag(events: list[OutboxEvent]) -> None:
    """Record each dispatched row's lag, from its commit to now."""
    now = time.time()
    for event in events:
        at = committed_at(event)
        if at is not None:
            RELAY_LAG.labels(topic=event.topic).observe(max(0.0, now - at))
