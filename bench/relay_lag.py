"""Scenario "relay lag": an accept's commit -> Temporal has started its workflow, notify vs poll-only.

"Commit" is `requests.created_at`, now() of the accept transaction: its start, a hair before its
commit. "Started" is Temporal's own record, the workflow execution's start time, not anything the
relay notes. Requests are POSTed at a few fixed rates below the end-to-end max, first with the
relays woken after each accept (the default), then with `ACKFLOW_OUTBOX_NOTIFY=false`, where the
relay only polls every `ACKFLOW_RELAY_POLL_SECONDS`. Only the relay is restarted for poll-only
(and back to its defaults afterwards): its not listening is all that changes this figure, the
gateway's wake-ups then reach no one. A step ends when Temporal has started all its workflows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from temporalio.client import Client

from ackflow.contracts import workflow_id_for
from ackflow.settings import Settings
from bench.accept import client_pool, poster
from bench.loadgen import Send, Step, run_open_loop
from bench.profile import Profile
from bench.stack import TASK_QUEUE, Stack
from bench.stats import Percentiles, percentiles

WAIT_FOR_STARTS_SECONDS = 10.0
# The relay's extra environment per mode; None: the relay as the stack runs it (notify, the default).
MODES: dict[str, dict[str, str] | None] = {"notify": None, "poll_only": {"ACKFLOW_OUTBOX_NOTIFY": "false"}}


async def measure_relay_lag(stack: Stack, profile: Profile, log: Callable[[str], None]) -> dict[str, Any]:
    """Percentiles of commit -> workflow started, per mode and rate."""
    client = await Client.connect(stack.temporal_address)
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
    result: dict[str, Any] = {"poll_seconds": Settings().relay_poll_seconds}
    try:
        for mode, env in MODES.items():
            stack.ensure_role("relay", env=env)
            result[mode] = await _measure_mode(stack, client, pool, profile, mode, log)
    finally:
        await pool.close()
        stack.ensure_role("relay", env={})
    return result


async def _measure_mode(
    stack: Stack, client: Client, pool: asyncpg.Pool, profile: Profile, mode: str, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    steps = []
    async with client_pool(stack.gateway_url, stack.api_key) as http:
        post = poster(http)
        await _run_step(client, pool, post, 5, 1.0)  # warm up, and wait until a (re)started relay relays
        for rate in profile.relay_lag_rates:
            step, lag = await _run_step(client, pool, post, rate, profile.relay_lag_step_seconds)
            log(
                f"  {mode:>9} @ {rate:>4g}/s: {lag.count} of {len(step.samples)} started, p50 {lag.p50} ms, "
                f"p90 {lag.p90} ms, p99 {lag.p99} ms, max {lag.max} ms"
            )
            steps.append({"rate": rate, "sent": len(step.samples), "errors": step.errors, "lag_ms": lag.as_dict()})
    return steps


async def _run_step(
    client: Client, pool: asyncpg.Pool, post: Send, rate: float, seconds: float
) -> tuple[Step, Percentiles]:
    """POST at `rate` for `seconds`; the lags of its requests, once all their workflows started."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    step = await run_open_loop(post, rate, seconds)
    return step, percentiles(await _lags(client, pool, [s.ident for s in step.ok if s.ident], since))


async def _lags(client: Client, pool: asyncpg.Pool, request_ids: list[str], since: datetime) -> list[float]:
    """Seconds from each request's accept transaction to its workflow's start, as Temporal recorded it."""
    rows = await pool.fetch(
        "SELECT id::text, extract(epoch FROM created_at)::float8 AS at FROM requests WHERE id = ANY($1::uuid[])",
        request_ids,
    )
    committed = {workflow_id_for(row["id"]): row["at"] for row in rows}
    started: dict[str, float] = {}
    query = f'TaskQueue = "{TASK_QUEUE}" AND StartTime >= "{since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}"'
    deadline = time.monotonic() + WAIT_FOR_STARTS_SECONDS
    while time.monotonic() < deadline:
        async for execution in client.list_workflows(query):
            if execution.id in committed:
                started[execution.id] = execution.start_time.timestamp()
        if len(started) == len(committed):
            break
        await asyncio.sleep(0.2)
    return [started[workflow_id] - committed[workflow_id] for workflow_id in started]
