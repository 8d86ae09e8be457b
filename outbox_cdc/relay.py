"""The relay loop: claim a batch under a lease, dispatch it, then finish or postpone it.

The claim also groups the accepted requests it admits into `request.batch` rows, up to `batch_max`
requests of one task queue each (migration 0013), each started as one workflow: under light load a
claim holds one request and its batch is that request alone; under load the batches fill.

The claim is one statement that commits at once, leasing its rows (`claimed_until`) to this relay,
so no transaction stays open while the batch's RPCs run, and several relays share the outbox
without taking the same row. A relay killed mid-batch leaves its leases to expire; another relay
then claims those rows again. A row is deleted only after its dispatch succeeded (at-least-once:
every route is idempotent), all of a batch in one statement. A failed dispatch is postponed with
exponential backoff, its error recorded for operators; one that can never succeed (a permanent
error, or failing for longer than the dead-letter limits) is dead-lettered: kept for operators
(`ackflow outbox`), never claimed again, and a request whose workflow could not be started ends
FAILED with a `DispatchFailed` error, so its client learns why on every channel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from ackflow.claim_loop import ClaimLoop
from ackflow.contracts import TOPIC_BATCH
from ackflow.db.listen import OUTBOX_CHANNEL
from ackflow.db.queries import sql
from ackflow.db.transitions import fail_unstarted
from ackflow.errors import PermanentDispatchError
from ackflow.events import OutboxEvent, Route
from ackflow.logs import log_context
from ackflow.metrics import OUTBOX_DEAD_LETTERED, RELAY_DISPATCH_ERRORS
from outbox_cdc.admission import WorkflowAdmission
from outbox_cdc.lag import observe_lag

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True)
class DeadLetterLimits:
    """When a failing row stops being retried: after `max_attempts`, or failing for `max_failing_seconds`."""

    max_attempts: int = 500
    max_failing_seconds: float = 6 * 3600.0

    def exceeded(self, event: OutboxEvent, now: datetime) -> bool:
        if event.attempts + 1 >= self.max_attempts:
            return True
        return (
            event.failing_since is not None and (now - event.failing_since).total_seconds() >= self.max_failing_seconds
        )


class OutboxRelay:
    """Moves outbox rows to their routes (topic -> async callable)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        database_url: str,
        routes: Mapping[str, Route],
        *,
        batch_size: int = 100,
        batch_max: int = 50,
        poll_seconds: float = 1.0,
        dispatch_timeout: float | None = None,
        lease_seconds: float = 30.0,
        admission: WorkflowAdmission | None = None,
        dead_letters: DeadLetterLimits | None = None,
        listen: bool = True,
    ) -> None:
        if dispatch_timeout is None:  # a dispatch ends well within its lease, so no other relay takes it meanwhile
            dispatch_timeout = min(10.0, lease_seconds / 2)
        if lease_seconds <= dispatch_timeout:
            raise ValueError("the relay's lease must outlast a dispatch (lease_seconds > dispatch_timeout)")
        self._pool = pool
        self._admission = admission
        self._dead_letters = dead_letters or DeadLetterLimits()
        self._routes = dict(routes)
        self._batch_size = batch_size
        self._batch_max = batch_max
        self._dispatch_timeout = dispatch_timeout
        self._lease_seconds = lease_seconds
        self._loop = ClaimLoop("relay", database_url, OUTBOX_CHANNEL, poll_seconds=poll_seconds, listen=listen)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set. NOTIFY wakes it at once; polling covers a lost notification."""

        async def step() -> bool:
            return await self.relay_batch() >= self._batch_size

        await self._loop.run(stop, step)

    async def relay_batch(self) -> int:
        """Claim and dispatch one batch; return how many rows were claimed (each batch's requests counted)."""
        events = await self._claim()
        if not events:
            return 0
        outcomes = await asyncio.gather(*(self._dispatch(event) for event in events))
        await self._settle(events, outcomes)
        return sum(len(event.payload.get("requests", ())) if event.topic == TOPIC_BATCH else 1 for event in events)

    async def _claim(self) -> list[OutboxEvent]:
        max_in_flight = self._admission.max_in_flight if self._admission is not None else None
        rows = await self._pool.fetch(
            sql("claim_outbox"), self._batch_size, max_in_flight, self._lease_seconds, self._batch_max
        )
        return [OutboxEvent(**dict(row)) for row in rows]

    async def _dispatch(self, event: OutboxEvent) -> BaseException | None:
        """Run the event's route; None on success, else what went wrong."""
        route = self._routes.get(event.topic)
        if route is None:  # perhaps a newer relay's topic, during a rolling deploy: postponed, not dead
            return LookupError(f"no route for topic {event.topic!r}")
        try:
            with log_context(**_log_fields(event)):
                async with asyncio.timeout(self._dispatch_timeout):  # no Task per dispatch, unlike wait_for
                    await route(event)
        except Exception as exc:  # any failure keeps the row for a later attempt, or dead-letters it
            log.warning("dispatch of outbox row %s (%s) failed: %r", event.id, event.topic, exc)
            return exc
        return None

    async def _settle(self, events: list[OutboxEvent], outcomes: list[BaseException | None]) -> None:
        """Delete what was dispatched and postpone what failed, in one statement; dead-letter the rest."""
        now = datetime.now(UTC)
        dispatched: list[OutboxEvent] = []
        postponed: list[tuple[OutboxEvent, str, float]] = []
        dead: list[tuple[OutboxEvent, str]] = []
        for event, error in zip(events, outcomes, strict=True):
            if error is None:
                dispatched.append(event)
                continue
            RELAY_DISPATCH_ERRORS.labels(topic=event.topic).inc()
            if isinstance(error, PermanentDispatchError) or self._dead_letters.exceeded(event, now):
                dead.append((event, describe(error)))
            else:
                postponed.append((event, describe(error), min(MAX_BACKOFF_SECONDS, 0.5 * 2**event.attempts)))
        await self._pool.execute(
            sql("settle_outbox"),
            [event.id for event in dispatched],
            [event.claimed_until for event in dispatched],
            [event.id for event, _, _ in postponed],
            [event.claimed_until for event, _, _ in postponed],
            [error for _, error, _ in postponed],
            [delay for _, _, delay in postponed],
        )
        observe_lag(dispatched)
        for event, reason in dead:
            await self._dead_letter(event, reason)
        if postponed:  # step again when the first of them is due, not only at the next poll
            asyncio.get_running_loop().call_later(min(delay for _, _, delay in postponed), self._loop.wake)

    async def _dead_letter(self, event: OutboxEvent, error: str) -> None:
        log.error(
            "outbox row %s (%s) dead-lettered after %d attempts: %s", event.id, event.topic, event.attempts + 1, error
        )
        async with self._pool.acquire() as connection, connection.transaction():
            dead = await connection.fetchrow(sql("dead_letter_outbox"), event.id, error, event.claimed_until)
            if dead is None:
                return  # this relay's lease ran out and another relay holds the row now: it decides
            OUTBOX_DEAD_LETTERED.labels(topic=event.topic).inc()
            failure = {"type": "DispatchFailed", "message": f"the request's workflow could not be started: {error}"}
            await fail_unstarted(connection, dead, failure)


def describe(error: BaseException) -> str:
    """The error as operators read it on the row, bounded."""
    return f"{type(error).__name__}: {error}"[:1000]


def _log_fields(event: OutboxEvent) -> dict[str, Any]:
    """What a log line about this row's dispatch names: its request (a batch: every member) and tenant."""
    members = event.payload.get("requests") if event.topic == TOPIC_BATCH else None
    request_ids = [m.get("request_id") for m in members if isinstance(m, dict)] if isinstance(members, list) else None
    return {"request_id": event.request_id, "request_ids": request_ids, "tenant": event.tenant_id}
