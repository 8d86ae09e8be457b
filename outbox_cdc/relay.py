"""The relay loop: wake on NOTIFY (or every poll interval), claim a batch, dispatch, delete.

Rows are claimed with `FOR UPDATE SKIP LOCKED` inside a transaction that stays open while the batch
is dispatched, so several relays share the outbox without taking the same row, and a relay killed
mid-batch simply lets its rows go back (its transaction rolls back). A row is deleted only after its
dispatch succeeded, so delivery is at-least-once: every route must be idempotent. A failed dispatch
stays in the outbox, postponed with exponential backoff, its error recorded for operators.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

import asyncpg

from ackflow.aio import wait_for_wake
from ackflow.contracts import TOPIC_ACCEPTED
from ackflow.db.listen import listen_until_stopped
from ackflow.db.queries import sql
from ackflow.events import OutboxEvent, Route
from outbox_cdc.admission import WorkflowAdmission

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "ackflow_outbox"
MAX_BACKOFF_SECONDS = 60.0


class OutboxRelay:
    """Moves outbox rows to their routes (topic -> async callable)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        database_url: str,
        routes: Mapping[str, Route],
        *,
        batch_size: int = 100,
        poll_seconds: float = 1.0,
        dispatch_timeout: float = 10.0,
        admission: WorkflowAdmission | None = None,
        listen: bool = True,
    ) -> None:
        self._pool = pool
        self._listen = listen
        self._admission = admission
        self._database_url = database_url
        self._routes = dict(routes)
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._dispatch_timeout = dispatch_timeout
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set. NOTIFY wakes it at once; polling covers a lost notification.

        With `listen=False` it only polls: for connection poolers in transaction mode, where LISTEN
        does not work.
        """
        listener = None
        if self._listen:
            listener = asyncio.create_task(
                listen_until_stopped(
                    self._database_url, NOTIFY_CHANNEL, self._wake.set, stop, retry_seconds=self._poll_seconds
                ),
                name="outbox-listen",
            )
        try:
            while not stop.is_set():
                try:
                    claimed = await self.relay_batch()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("relay batch failed, retrying: %s", exc)
                    claimed = 0
                if claimed < self._batch_size:
                    await wait_for_wake(self._wake, stop, self._poll_seconds)
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener

    async def relay_batch(self) -> int:
        """Claim and dispatch one batch; return how many rows were claimed."""
        max_in_flight = self._admission.max_in_flight if self._admission is not None else None
        async with self._pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(sql("claim_outbox"), self._batch_size, max_in_flight)
            if not rows:
                return 0
            events = [OutboxEvent(**dict(row)) for row in rows]
            outcomes = await asyncio.gather(*(self._dispatch(event) for event in events))
            succeeded = [event for event, error in zip(events, outcomes, strict=True) if error is None]
            if succeeded:
                started = [event.request_id for event in succeeded if event.topic == TOPIC_ACCEPTED]
                await connection.execute(sql("finish_outbox"), [event.id for event in succeeded], started)
            for event, error in zip(events, outcomes, strict=True):
                if error is not None:
                    delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2**event.attempts)
                    await connection.execute(sql("postpone_outbox"), event.id, error[:1000], delay)
            return len(rows)

    async def _dispatch(self, event: OutboxEvent) -> str | None:
        """Run the event's route; None on success, else the error to record."""
        route = self._routes.get(event.topic)
        if route is None:
            return f"no route for topic {event.topic!r}"
        try:
            async with asyncio.timeout(self._dispatch_timeout):  # no Task per dispatch, unlike wait_for
                await route(event)
        except Exception as exc:  # any failure keeps the row for a later attempt
            log.warning("dispatch of outbox row %s (%s) failed: %r", event.id, event.topic, exc)
            return f"{type(exc).__name__}: {exc}"
        return None
