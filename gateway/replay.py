"""Catching up from Postgres, the record: a request's or a tenant's events after a point, page by page.

Pages are bounded in rows and in bytes (results may be 1 MiB each), and a stream writes each page
before the next is read, so a client thousands of events behind gets all of them without the
gateway holding more than a page for it. A request's page is read once for every stream asking for
it at the same moment (after a gap or a RESYNC, thousands may).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from ackflow.db.queries import sql
from gateway.event_filter import EVERY_EVENT, EventFilter
from gateway.shared_reads import SharedReads
from gateway.stream_items import FLUSH, Flush, StreamEvent

REPLAY_PAGE_ROWS = 1000
REPLAY_PAGE_BYTES = 4 * 1024 * 1024  # of events' `data` per page read (a larger event comes alone)


@dataclass(frozen=True)
class Page:
    """One page of replay: its events in order, and whether more follow."""

    events: list[StreamEvent]
    more: bool


class Replay:
    """Events read from Postgres a page at a time."""

    def __init__(
        self, pool: asyncpg.Pool, *, page_rows: int = REPLAY_PAGE_ROWS, page_bytes: int = REPLAY_PAGE_BYTES
    ) -> None:
        self.pool = pool
        self.page_rows = page_rows
        self.page_bytes = page_bytes
        self._reads: SharedReads[Page] = SharedReads()

    async def request_page(self, tenant_id: uuid.UUID, request_id: uuid.UUID, after_version: int) -> Page:
        """The request's next page of events after `after_version` (shared by every stream asking at once)."""

        async def read() -> Page:
            rows = await self.pool.fetch(
                sql("request_events_page"), request_id, tenant_id, after_version, self.page_rows, self.page_bytes
            )
            return _page(rows)

        return await self._reads.share((tenant_id, request_id, after_version), read)

    async def tenant_page(self, tenant_id: uuid.UUID, after_id: int, only: EventFilter = EVERY_EVENT) -> Page:
        """The tenant's next page of events after event `after_id`, those `only` matches."""
        rows = await self.pool.fetch(
            sql("tenant_events_page"),
            tenant_id,
            after_id,
            only.kind,
            only.status,
            self.page_rows,
            self.page_bytes,
            only.tag,
        )
        return _page(rows)

    def request_events(
        self, tenant_id: uuid.UUID, request_id: uuid.UUID, after_version: int
    ) -> AsyncGenerator[StreamEvent | Flush, None]:
        """Every event of the request after `after_version`, page by page, FLUSH between pages."""
        return _pages(lambda after: self.request_page(tenant_id, request_id, after), after_version, _version)

    def tenant_events(
        self, tenant_id: uuid.UUID, after_id: int, only: EventFilter
    ) -> AsyncGenerator[StreamEvent | Flush, None]:
        """Every matching event of the tenant after event `after_id`, page by page, FLUSH between pages."""
        return _pages(lambda after: self.tenant_page(tenant_id, after, only), after_id, _id)


async def _pages(
    read: Callable[[int], Awaitable[Page]], after: int, position: Callable[[StreamEvent], int]
) -> AsyncGenerator[StreamEvent | Flush, None]:
    """The events of the pages `read` gives, each read after the `position` of the last event before it."""
    while True:
        page = await read(after)
        for event in page.events:
            yield event
        if not page.more:
            return
        after = position(page.events[-1])
        yield FLUSH  # write this page before reading the next: one page in memory at a time


def _version(event: StreamEvent) -> int:
    return event.version


def _id(event: StreamEvent) -> int:
    return event.id


def _page(rows: list[Any]) -> Page:
    return Page([_from_row(row) for row in rows], bool(rows) and bool(rows[-1]["more"]))


def _from_row(row: Any) -> StreamEvent:
    return StreamEvent(row["id"], row["topic"], row["status"], row["version"], str(row["request_id"]), row["data"])
