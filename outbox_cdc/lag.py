"""When an outbox row's event was committed, or (a delayed start) became due, for the relay's lag
(ackflow_relay_lag_seconds).

An accepted row and each member of a batch row carry `due_at`: their accept, or their scheduled
time if later (migration 0018), so a delay the client asked for never reads as lag; a batch's lag
runs from its member due longest ago. Rows of before that migration carry none: an accepted row's
request id is a UUIDv7 (ackflow/ids.py) minted at its accept, and a batch row's request id is its
oldest member's (the row itself is made at the claim, which would hide the wait). A status row's
payload is the request's state, whose `updated_at` is the transaction that wrote the row. A row
carrying no time (a cancel) is not measured.
"""

from __future__ import annotations

import time
from datetime import datetime

from ackflow.contracts import EVENT_TOPICS, TOPIC_ACCEPTED, TOPIC_BATCH
from ackflow.events import OutboxEvent
from ackflow.metrics import RELAY_LAG


def committed_at(event: OutboxEvent) -> float | None:
    """The Unix time the row's event was committed or became due (to the millisecond), or None if it does not say."""
    if event.topic in (TOPIC_ACCEPTED, TOPIC_BATCH):
        members = event.payload.get("requests") if event.topic == TOPIC_BATCH else [event.payload]
        due = [_timestamp(m.get("due_at")) for m in members or [] if isinstance(m, dict)]
        if due and None not in due:
            return min(d for d in due if d is not None)
        if event.request_id.version != 7:
            return None
        return (event.request_id.int >> 80) / 1000.0
    if event.topic in EVENT_TOPICS:
        return _timestamp(event.payload.get("updated_at"))
    return None


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def observe_lag(events: list[OutboxEvent]) -> None:
    """Record each dispatched row's lag, from its commit to now."""
    now = time.time()
    for event in events:
        at = committed_at(event)
        if at is not None:
            RELAY_LAG.labels(topic=event.topic).observe(max(0.0, now - at))
