"""Progress reports: how far a handler, or an activity of a workflow kind, has got.

    from ackflow import handler, progress

    @handler("resize")
    async def resize(payload: dict) -> dict:
        await progress(0.4, "resizing", partial={"width": 640})
        ...

Each report is written as a status change is: the request keeps the latest (`progress` in its
state), and a `request.progress` event with the request's next version goes to SSE, WebSocket, the
long poll (`?wait=N&progress=true`), the client's `events()` and webhooks that ask for that event
type. Reports are coalesced per request: at most one is written per `progress_interval_seconds`; one
made meanwhile replaces the one waiting, which is written when the interval is up, and the last one
is written before the outcome is recorded. The fraction done never moves back (a retried attempt
starting over leaves the client's bar where it was) unless the report says `backwards=True`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from ackflow.db.queries import sql
from ackflow.handlers import PermanentError

if TYPE_CHECKING:  # the client's base install has no asyncpg; a worker passes its pool
    import asyncpg

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 500


class ProgressError(PermanentError, ValueError):
    """A report that cannot be recorded: a fraction outside 0..1, a message or partial result too large.
    A bug no retry fixes, so (unless the handler catches it) its request ends FAILED."""


@dataclass(frozen=True)
class Report:
    fraction: float | None
    message: str | None
    partial: Any
    backwards: bool


_reporter: ContextVar[_Reporter | None] = ContextVar("ackflow_progress_reporter", default=None)


async def progress(
    fraction: float | None = None, message: str | None = None, *, partial: Any = None, backwards: bool = False
) -> None:
    """Report how far the running request has got: `fraction` done (0..1), a short `message`, a
    JSON `partial` result. Call it from a handler or from an activity of a workflow kind."""
    reporter = _reporter.get()
    if reporter is None:
        raise RuntimeError(
            "progress() reports for a running request: call it from a handler or a workflow kind's activity"
        )
    await reporter.report(reporter.checked(fraction, message, partial, backwards))


class ProgressReports:
    """A worker's progress writer: `reporting(request_id)` around one attempt makes `progress()` report for it."""

    def __init__(self, pool: asyncpg.Pool, *, interval_seconds: float = 0.25, max_partial_bytes: int = 64 * 1024):
        self._pool = pool
        self._interval = interval_seconds
        self._max_partial_bytes = max_partial_bytes

    @asynccontextmanager
    async def reporting(self, request_id: str) -> AsyncIterator[None]:
        """Within, `progress()` reports for `request_id`; on the way out the report still waiting is
        written, unless the attempt was cancelled (its request ended: nothing more to say)."""
        reporter = _Reporter(self._pool, request_id, self._interval, self._max_partial_bytes)
        token = _reporter.set(reporter)
        try:
            yield
        except asyncio.CancelledError:
            reporter.abandon()
            raise
        except BaseException:
            await reporter.close(quietly=True)  # the attempt's own error is what matters
            raise
        else:
            await reporter.close()
        finally:
            _reporter.reset(token)


class _Reporter:
    """One attempt's reports: written at most once per interval, the last one always."""

    def __init__(self, pool: asyncpg.Pool, request_id: str, interval: float, max_partial_bytes: int) -> None:
        self._pool = pool
        self._request_id = request_id
        self._interval = interval
        self._max_partial_bytes = max_partial_bytes
        self._pending: Report | None = None
        self._next_write = 0.0  # loop time
        self._later: asyncio.Task[None] | None = None  # writes the pending report when the interval is up
        self._sleeping = False
        self._lock = asyncio.Lock()

    def checked(self, fraction: float | None, message: str | None, partial: Any, backwards: bool) -> Report:
        if fraction is not None:
            if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not math.isfinite(fraction):
                raise ProgressError(f"progress fraction must be a number from 0 to 1, not {fraction!r}")
            if not 0 <= fraction <= 1:
                raise ProgressError(f"progress fraction must be from 0 to 1, not {fraction}")
        if message is not None:
            if not isinstance(message, str) or "\x00" in message or len(message) > MAX_MESSAGE_CHARS:
                raise ProgressError(f"progress message must be text of at most {MAX_MESSAGE_CHARS} characters, no NUL")
        if partial is not None:
            try:
                encoded = msgspec.json.encode(partial)
            except (TypeError, msgspec.EncodeError) as exc:
                raise ProgressError(f"partial result is not JSON-serialisable: {exc}") from None
            if len(encoded) > self._max_partial_bytes:
                raise ProgressError(
                    f"partial result is {len(encoded)} bytes, over the {self._max_partial_bytes}-byte limit"
                )
            if b"\\u0000" in encoded:
                raise ProgressError("partial result contains a NUL character (\\u0000), which Postgres cannot store")
        return Report(None if fraction is None else float(fraction), message, partial, backwards)

    async def report(self, report: Report) -> None:
        if self._pending is not None and self._pending.backwards:  # a reset is kept even if replaced
            report = Report(report.fraction, report.message, report.partial, True)
        self._pending = report
        if self._later is not None:
            return  # written when the interval is up
        wait = self._next_write - asyncio.get_running_loop().time()
        if wait > 0:
            self._sleeping = True
            self._later = asyncio.create_task(self._write_after(wait))
            return
        await self._write()

    async def close(self, *, quietly: bool = False) -> None:
        """Write the report still waiting (now, not when its interval is up)."""
        if self._later is not None:
            if self._sleeping:
                self._later.cancel()
            await asyncio.wait([self._later])  # a write under way finishes first, so reports stay in order
        try:
            await self._write()
        except Exception:
            if not quietly:
                raise
            log.warning("the last progress report of request %s was not written", self._request_id, exc_info=True)

    def abandon(self) -> None:
        if self._later is not None:
            self._later.cancel()

    async def _write_after(self, wait: float) -> None:
        await asyncio.sleep(wait)  # cancelled here by close(), which writes at once instead
        self._sleeping = False
        try:
            await self._write()
        except Exception:  # kept pending: the next report or the close writes it
            log.warning("a progress report of request %s was not written", self._request_id, exc_info=True)
        finally:
            self._later = None

    async def _write(self) -> None:
        async with self._lock:
            report, self._pending = self._pending, None
            if report is None:
                return
            self._next_write = asyncio.get_running_loop().time() + self._interval
            try:
                await self._pool.execute(
                    sql("report_progress"),
                    uuid.UUID(self._request_id),
                    report.fraction,
                    report.message,
                    report.partial,
                    report.backwards,
                )
            except BaseException:
                if self._pending is None:
                    self._pending = report
                raise
