"""The relay's route for `request.cancel_requested`: CANCELLED at once, then the handler stopped.

A batch runs its requests' first attempts in one local activity, which holds the workflow's task
open while it runs, so a signal to the workflow may wait seconds to be read. So the relay records
CANCELLED itself (guarded like every transition: a request that ended meanwhile stays as it is),
then tells the workflow: a handler in the batch's activity is stopped by the activity, which sees
within a second that its request ended; one running alone is cancelled by the workflow on the signal.
"""

from __future__ import annotations

import asyncpg

from ackflow.contracts import CANCELLED, INIT, PROCESSING
from ackflow.db.transitions import transition
from ackflow.events import OutboxEvent
from outbox_cdc.temporal_dispatch import TemporalDispatcher


class CancelRequestRoute:
    """Records CANCELLED, then asks the request's workflow to stop its handler (idempotent, both)."""

    def __init__(self, pool: asyncpg.Pool, dispatcher: TemporalDispatcher) -> None:
        self._pool = pool
        self._dispatcher = dispatcher

    async def __call__(self, event: OutboxEvent) -> None:
        await transition(self._pool, event.request_id, CANCELLED, (INIT, PROCESSING))
        await self._dispatcher.cancel_request(event)
