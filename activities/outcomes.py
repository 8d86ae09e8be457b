"""Handlers' outcomes, recorded from PROCESSING in groups: one statement for all that ended together.

A batch's handlers end one by one; each outcome is written as soon as it ends, together with every
other outcome (of any batch on this worker) that ended while the previous write ran (GroupCommit).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from ackflow.contracts import FAILED, PROCESSING
from ackflow.db.transitions import transition_many
from ackflow.group_commit import GroupCommit

# Results are up to 1 MiB each (RequestActivities' max_result_bytes): a group stays a sane statement.
MAX_GROUP = 100
NUL_IN_RESULT = {
    "type": "InvalidResult",
    "message": "handler result contains a NUL character (\\u0000), which Postgres cannot store",
}


class OutcomeRecorder:
    """Records DONE (with a result) or FAILED (with an error) for requests still PROCESSING."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._group: GroupCommit[dict[str, Any], bool] = GroupCommit(self._write, max_items=MAX_GROUP)

    async def record(
        self, request_id: str, status: str, *, result: Any = None, error: dict[str, Any] | None = None
    ) -> bool:
        """Whether the outcome was recorded; False if the request had ended meanwhile (cancelled, say)."""
        return await self._group.submit({"id": request_id, "status": status, "result": result, "error": error})

    async def _write(self, changes: list[dict[str, Any]]) -> list[bool]:
        try:
            moved = await transition_many(self._pool, changes, (PROCESSING,))
        except asyncpg.UntranslatableCharacterError:  # a result Postgres cannot store fails only its own request
            if len(changes) > 1:
                return [outcome for change in changes for outcome in await self._write([change])]
            failed = {"id": changes[0]["id"], "status": FAILED, "error": NUL_IN_RESULT}
            await transition_many(self._pool, [failed], (PROCESSING,))
            return [False]
        ids = {str(row["id"]) for row in moved}
        return [str(change["id"]) in ids for change in changes]
