"""The relay's route for `request.supersede`: a request accepted under its concurrency key's policy
cancel_running or replace_queued cancels the key's earlier requests that it replaces.

Written by the accept in the same statement as the request (migration 0020), so the policy holds
whatever dies after the 202. Each replaced request is cancelled in its own transaction, locked
first as every status change of one request is: one still waiting ends CANCELLED and its accepted
row goes; one running ends CANCELLED and a cancel row stops its workflow (CancelRequestRoute). Its
end passes its key's slot on (the database's trigger), to the oldest request still waiting: the
new one, once everything before it is cancelled. Idempotent: a request that ended is skipped.
"""

from __future__ import annotations

import asyncpg

from ackflow.contracts import CANCELLED, INIT, KEY_CANCEL_RUNNING, PROCESSING
from ackflow.db.queries import sql
from ackflow.db.transitions import transition
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
                locked = await connection.fetchrow(sql("lock_request"), row["id"], event.tenant_id)
                if locked is None or locked["status"] not in (INIT, PROCESSING):
                    continue
                await transition(connection, row["id"], CANCELLED, (INIT, PROCESSING), error=error)
                if locked["status"] == INIT:
                    await connection.execute(sql("drop_unclaimed_accept"), row["id"])
                else:
                    await connection.execute(sql("mark_cancel_requested"), row["id"])
