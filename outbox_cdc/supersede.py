"""The relay's route for `request.supersede`: a request accepted under its concurrency key's policy
cancel_running or replace_queued cancels the key's earlier requests that it replaces.

Written by the accept in the same statement as the request (migration 0020), so the policy holds
whatever dies after the 202. Each replaced request is cancelled in its own transaction, locked
first as every status change of one request is, and checked again once locked: one still waiting
ends CANCELLED and its accepted row goes; one running ends CANCELLED and a cancel row stops its
workflow (CancelRequestRoute; its handler learns of it at its next heartbeat). The waiting ones go
first, so that the slot a holder's end passes on (the database's trigger) goes to the oldest request
not replaced: the new one, or one accepted after it. Idempotent: a request that ended is skipped.
The relay does this moments after the accept: a waiting request that got its key's slot meanwhile
(its holder ended) runs on under replace_queued.
"""

from __future__ import annotations

import asyncpg

from ackflow.contracts import CANCELLED, INIT, KEY_CANCEL_RUNNING, PROCESSING
from ackflow.db.queries import sql
from ackflow.db.transitions import cancel_unstarted, transition
from ackflow.events import OutboxEvent


class SupersedeRoute:
    """Cancels the requests of the key that the new request replaces (idempotent)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def __call__(self, event: OutboxEvent) -> None:
        policy, key = str(event.payload["policy"]), str(event.payload["concurrency_key"])
        replaced = await self._pool.fetch(sql("superseded_requests"), event.tenant_id, key, event.request_id, policy)
        what = "cancels the requests before it" if policy == KEY_CANCEL_RUNNING else "replaces the waiting requests"
        error = {
            "type": "Superseded",
            "message": f"request {event.request_id} with the same concurrency_key {what} ({policy})",
            "superseded_by": str(event.request_id),
        }
        for row in replaced:
            async with self._pool.acquire() as connection, connection.transaction():
                # Checked again once locked: one waiting then may hold the key now (replace_queued spares it).
                status = await connection.fetchval(sql("lock_superseded"), row["id"], policy)
                if status is None:
                    continue
                if status == INIT:
                    await cancel_unstarted(connection, row["id"], error=error)
                else:
                    await transition(connection, row["id"], CANCELLED, (PROCESSING,), error=error)
                    await connection.execute(sql("mark_cancel_requested"), row["id"])
