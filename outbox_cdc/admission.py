"""Admission control: start request workflows only as fast as Temporal finishes them.

A burst of accepted requests waits in the outbox (durable, visible, cheap) rather than in Temporal,
where thousands of started workflows only turn into queueing and, with many workflow-task slots,
have been seen to collapse throughput. The relay asks for `room` before claiming `request.accepted`
rows, and records which it started; a request stops counting once it has `completed_at`.
"""

from __future__ import annotations

import asyncpg

from ackflow.contracts import TOPIC_ACCEPTED
from ackflow.db.queries import sql
from ackflow.events import OutboxEvent


class WorkflowAdmission:
    """At most `max_in_flight` request workflows started and not yet finished, across all relays."""

    topic = TOPIC_ACCEPTED

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight

    async def room(self, connection: asyncpg.Connection) -> int:
        in_flight: int = await connection.fetchval(sql("workflows_in_flight"))
        return max(0, self.max_in_flight - in_flight)

    async def admitted(self, connection: asyncpg.Connection, events: list[OutboxEvent]) -> None:
        """Record that these requests' workflows were started (in the relay's transaction)."""
        if events:
            await connection.execute(sql("mark_workflows_started"), [e.request_id for e in events])
