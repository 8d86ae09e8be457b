"""What runs when /metrics is scraped: the refreshers roles register, then the exposition.

Some gauges are read, not counted: whether Postgres, Redis and Temporal answer, and the stage health
read from Postgres (ackflow/metrics/stages.py). They are refreshed when scraped, not by a loop of
their own, so nothing loads Postgres when nobody is looking. A refresh runs at most once every
`MIN_INTERVAL_SECONDS` however many scrapers there are, and each refresher is bounded by
`TIMEOUT_SECONDS`, so a slow dependency makes a scrape a little late and a gauge 0, never a hung
scrape.

Each role registers its refreshers for as long as it runs (`refreshing(...)`); every role of the
process is refreshed by any scrape, which is how `ackflow dev` shows all of them on one page.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import REGISTRY, generate_latest

from ackflow.metrics.catalogue import DEPENDENCY_UP

log = logging.getLogger(__name__)

MIN_INTERVAL_SECONDS = 1.0
TIMEOUT_SECONDS = 2.0
# What generate_latest writes. prometheus-client's CONTENT_TYPE_LATEST names the 1.0.0 text format
# since 0.22, while generate_latest still writes 0.0.4, so the type is spelled out here.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Refresher = Callable[[], Awaitable[None]]
Probe = Callable[[], Awaitable[object]]


class ScrapeRefresh:
    """The process's refreshers, run together before an exposition, rate-limited and bounded in time."""

    def __init__(self, *, min_interval: float = MIN_INTERVAL_SECONDS, timeout: float = TIMEOUT_SECONDS) -> None:
        self._refreshers: list[Refresher] = []
        self._min_interval = min_interval
        self._timeout = timeout
        self._last = float("-inf")
        self._running = False

    @contextlib.contextmanager
    def refreshing(self, *refreshers: Refresher) -> Iterator[None]:
        """Run `refreshers` on every scrape while the block runs (a role, for as long as it runs)."""
        self._refreshers.extend(refreshers)
        self._last = float("-inf")  # the next scrape sees the new role at once
        try:
            yield
        finally:
            for refresher in refreshers:
                self._refreshers.remove(refresher)

    async def refresh(self) -> None:
        """Run every refresher, unless they ran less than `min_interval` ago or are running now."""
        now = time.monotonic()
        if self._running or now - self._last < self._min_interval:
            return
        self._running, self._last = True, now
        try:
            await asyncio.gather(*(self._bounded(refresher) for refresher in list(self._refreshers)))
        finally:
            self._running = False

    async def _bounded(self, refresher: Refresher) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await refresher()
        except Exception as exc:  # a refresher records its own failure (a gauge at 0); a scrape goes on
            log.debug("a metrics refresher failed: %r", exc)


REFRESH = ScrapeRefresh()  # the process's one, beside prometheus-client's one default REGISTRY


def dependency_check(dependency: str, probe: Probe, *, timeout: float = TIMEOUT_SECONDS * 0.75) -> Refresher:
    """A refresher that sets ackflow_dependency_up{dependency} to 1 if `probe()` answers within
    `timeout` (a cheap call: SELECT 1, PING, a health check), else 0. The timeout is inside the
    refresh's own, so a slow dependency reads 0 rather than keeping its last value."""
    gauge = DEPENDENCY_UP.labels(dependency=dependency)

    async def check() -> None:
        try:
            async with asyncio.timeout(timeout):
                answer = await probe()
        except Exception:
            gauge.set(0)
            return
        gauge.set(0 if answer is False else 1)

    return check


def token_matches(authorization: str | None, token: str) -> bool:
    """Whether an `Authorization` header carries `Bearer <token>` (compared in constant time)."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


async def exposition() -> bytes:
    """The text exposition of the default registry, after a refresh."""
    await REFRESH.refresh()
    return generate_latest(REGISTRY)
