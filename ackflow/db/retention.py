"""Retention: delete finished work once it is old enough, in small batches, from any number of relays.

Nothing else ever deletes ackflow's history, so without this every table grows for ever (webhook
bodies up to 1 MiB each). Only finished work is pruned: a request once it ended (DONE, FAILED,
CANCELLED) and nothing is left to do for it (no outbox row, no unfinished webhook delivery), a
delivery once it succeeded or failed, an idempotency key at its expiry, endpoint events by age, a
dead-lettered outbox row as long after as requests are kept, and a deleted endpoint once its
deliveries are gone. A request's events and a delivery's attempts go with it.

Each table has one statement (queries.sql, "Retention") that deletes at most a batch, oldest first,
skipping rows another pruner holds (SKIP LOCKED); a pass repeats it until a batch comes back short.
Every statement is its own short transaction, so no lock is held longer than one batch, and several
relays pruning at once share the work instead of waiting on each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from ackflow.db.pool import POSTGRES_ERRORS
from ackflow.db.queries import sql
from ackflow.settings import Settings

log = logging.getLogger(__name__)

SECONDS_A_DAY = 86_400.0


class Executor(Protocol):
    """A pool or a connection outside a transaction: each `execute` commits on its own."""

    async def execute(self, query: str, *args: object) -> str: ...


@dataclass(frozen=True)
class Target:
    """One table's pruning: its label in logs, its statement, and how long its rows are kept."""

    label: str
    query: str
    keep_seconds: float | None  # None: the rows carry their own expiry


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each kind of finished work is kept, and how many rows one statement deletes."""

    requests_days: float = 30.0
    deliveries_days: float = 30.0
    endpoint_events_days: float = 90.0
    deleted_endpoints_days: float = 30.0
    batch_size: int = 500

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            requests_days=settings.retain_requests_days,
            deliveries_days=settings.retain_deliveries_days,
            endpoint_events_days=settings.retain_endpoint_events_days,
            deleted_endpoints_days=settings.retain_deleted_endpoints_days,
            batch_size=settings.prune_batch_size,
        )

    def targets(self) -> tuple[Target, ...]:
        """The tables in pruning order: deliveries before the endpoints that wait for them to go."""
        return (
            Target("idempotency keys", "prune_idempotency_keys", None),
            Target("webhook deliveries", "prune_webhook_deliveries", self.deliveries_days * SECONDS_A_DAY),
            Target("dead outbox rows", "prune_dead_outbox_rows", self.requests_days * SECONDS_A_DAY),
            Target("requests", "prune_requests", self.requests_days * SECONDS_A_DAY),
            Target("submitted batches", "prune_submitted_batches", self.requests_days * SECONDS_A_DAY),
            Target("endpoint events", "prune_webhook_endpoint_events", self.endpoint_events_days * SECONDS_A_DAY),
            Target("deleted endpoints", "prune_deleted_webhook_endpoints", self.deleted_endpoints_days * SECONDS_A_DAY),
        )


async def prune(executor: Executor, policy: RetentionPolicy, stop: asyncio.Event | None = None) -> dict[str, int]:
    """One pass over every table; return how many rows each lost. Stops between batches once `stop` is set."""
    counts: dict[str, int] = {}
    for target in policy.targets():
        counts[target.label] = await _prune_table(executor, target, policy.batch_size, stop)
    return counts


async def _prune_table(executor: Executor, target: Target, batch_size: int, stop: asyncio.Event | None) -> int:
    """Delete a batch at a time until one comes back short (the rest, if any, is another pruner's)."""
    args: tuple[object, ...] = (batch_size,) if target.keep_seconds is None else (batch_size, target.keep_seconds)
    total = 0
    while stop is None or not stop.is_set():
        status = await executor.execute(sql(target.query), *args)
        deleted = int(status.rsplit(" ", 1)[-1])  # "DELETE n"
        total += deleted
        if deleted < batch_size:
            break
    return total


def describe(counts: dict[str, int]) -> str:
    """`3 requests, 0 webhook deliveries, ...`: one pass, for a log line or the CLI."""
    return ", ".join(f"{count} {label}" for label, count in counts.items())


class Pruner:
    """Prunes every `interval_seconds` until stopped; the relay role runs one beside its loop."""

    def __init__(self, pool: asyncpg.Pool, policy: RetentionPolicy, *, interval_seconds: float) -> None:
        self._pool = pool
        self._policy = policy
        self._interval = interval_seconds

    @classmethod
    def from_settings(cls, pool: asyncpg.Pool, settings: Settings) -> Pruner:
        """The pruner the relay role runs: ACKFLOW_RETAIN_*, ACKFLOW_PRUNE_INTERVAL_SECONDS and _BATCH_SIZE."""
        return cls(pool, RetentionPolicy.from_settings(settings), interval_seconds=settings.prune_interval_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        """A pass at once, then one every interval. Postgres going away only fails a pass."""
        while not stop.is_set():
            await self.prune_pass(stop)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)

    async def prune_pass(self, stop: asyncio.Event | None = None) -> dict[str, int] | None:
        """One pass, logged in one line with its counts; None if Postgres failed it (the next pass retries)."""
        started = time.monotonic()
        try:
            counts = await prune(self._pool, self._policy, stop)
        except POSTGRES_ERRORS as exc:
            log.warning("pruning failed, retrying in %g s: %s", self._interval, exc)
            return None
        log.info("pruned %s in %.2f s", describe(counts), time.monotonic() - started)
        return counts
