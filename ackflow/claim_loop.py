"""The claim loop both the outbox relay and the webhook dispatcher run: wake, claim, back off.

A loop wakes on a Postgres NOTIFY on its channel, on a poll interval (so a lost notification only
delays), when its owner says a slot is free (`wake()`), or on stop; then it calls `step()`, which
claims what it may under a lease and starts or does that work. A step that returns True found a
full claim, so there is probably more and the loop steps again at once; False sends it back to
sleep. A step that fails on Postgres (down, restarting, a dropped connection) is logged and the
loop backs off exponentially up to the poll interval times eight, so an outage costs neither a
busy loop nor a flood of log lines; anything else is a bug and ends the loop.

What a lease means, and how the work is finished, belongs to each owner: the loop only decides
when to claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ackflow.aio import wait_for_wake
from ackflow.db.listen import listen_until_stopped
from ackflow.db.pool import POSTGRES_ERRORS

log = logging.getLogger(__name__)


Step = Callable[[], Awaitable[bool]]


class ClaimLoop:
    """Calls `step` whenever there may be work, until stopped."""

    def __init__(self, name: str, database_url: str, channel: str, *, poll_seconds: float, listen: bool = True) -> None:
        self._name = name
        self._database_url = database_url
        self._channel = channel
        self._poll_seconds = poll_seconds
        self._listen = listen
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Step again soon (a slot was freed, or work was added by this process)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event, step: Step) -> None:
        """Run `step` until `stop` is set. With `listen=False` the loop only polls (for connection
        poolers in transaction mode, where LISTEN does not work)."""
        listener = None
        if self._listen:
            listener = asyncio.create_task(
                listen_until_stopped(
                    self._database_url, self._channel, self._wake.set, stop, retry_seconds=self._poll_seconds
                ),
                name=f"{self._name}-listen",
            )
        failures = 0
        try:
            while not stop.is_set():
                try:
                    more = await step()
                    failures = 0
                except POSTGRES_ERRORS as exc:
                    failures += 1
                    log.warning("%s: claiming failed (%d in a row), retrying: %s", self._name, failures, exc)
                    more = False
                if not more:
                    await wait_for_wake(self._wake, stop, self._backoff(failures))
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener

    def _backoff(self, failures: int) -> float:
        if failures == 0:
            return self._poll_seconds
        return float(min(self._poll_seconds * 8, self._poll_seconds * 2 ** (failures - 1)))
