"""Scenario "notification latency": DONE committed -> an SSE client has it, and -> a webhook receiver has it.

One SSE client follows the tenant's stream (`/v1/events?status=DONE`) and a webhook endpoint
subscribed to `request.done` points at a local receiver; requests are POSTed at 25 %, 50 % and 90 %
of ackflow's sustained end-to-end max (measured earlier in the run). Latency runs from
`requests.completed_at` (the DONE transaction's start, so a hair before its commit) to the
wall-clock arrival time; all on one machine, so one clock. The same run also gives end-to-end
latency as a client sees it: from each POST's due time to its DONE event arriving on the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import msgspec

from bench.accept import client_pool, poster
from bench.end_to_end import AckflowTarget, drain
from bench.loadgen import run_open_loop
from bench.receiver import running_receiver
from bench.stack import Stack
from bench.stats import percentiles

WAIT_FOR_ARRIVALS_SECONDS = 10.0


async def follow_sse(http: httpx.AsyncClient, arrivals: dict[str, float], connected: asyncio.Event) -> None:
    """Note when each request's DONE event arrives on the tenant's stream."""
    async with http.stream("GET", "/v1/events", params={"status": "DONE"}) as response:
        response.raise_for_status()
        connected.set()
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                at = time.time()
                with contextlib.suppress(msgspec.DecodeError, KeyError, TypeError):
                    arrivals.setdefault(str(msgspec.json.decode(line[5:].strip())["id"]), at)


async def measure_notifications(
    stack: Stack, rates: list[float], seconds: float, log: Callable[[str], None]
) -> dict[str, Any]:
    """POST at each rate for `seconds`; percentiles of DONE -> SSE, DONE -> webhook and POST -> DONE seen."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    pool = await asyncpg.create_pool(stack.database_url, min_size=1, max_size=2)
    steps: list[dict[str, Any]] = []
    async with (
        running_receiver() as receiver,
        httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=None, trust_env=False) as http,
        client_pool(stack.gateway_url, stack.api_key) as posts,
    ):
        registered = await http.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["request.done"]})
        registered.raise_for_status()
        sse_arrivals: dict[str, float] = {}
        connected = asyncio.Event()
        sse = asyncio.create_task(follow_sse(http, sse_arrivals, connected))
        try:
            await asyncio.wait_for(connected.wait(), 10)
            target = AckflowTarget(poster(posts), pool)
            for rate in rates:
                step = await run_open_loop(target.send, rate, seconds)
                due = {s.ident: s.due_wall for s in step.ok if s.ident}
                await _wait_for_arrivals(list(due), sse_arrivals, receiver.arrivals)
                completed = await target.completions(list(due))
                await drain(target)
                steps.append(_notification_step(rate, seconds, due, completed, sse_arrivals, receiver.arrivals, log))
        finally:
            sse.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await sse
            await pool.close()
    return {"seconds": seconds, "steps": steps}


def _notification_step(
    rate: float,
    seconds: float,
    due: dict[str, float],
    completed: dict[str, float],
    sse_arrivals: dict[str, float],
    webhook_arrivals: dict[str, float],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """One rate's percentiles: DONE -> each channel, and POST due -> DONE on the stream."""
    step: dict[str, Any] = {"rate": rate, "seconds": seconds, "requests": len(due), "completed": len(completed)}
    for name, arrivals in (("sse", sse_arrivals), ("webhook", webhook_arrivals)):
        delays = [arrivals[i] - completed[i] for i in completed if i in arrivals]
        step[name] = {"received": len(delays), "latency_ms": percentiles(delays).as_dict()}
        log(f"  DONE -> {name:<7} @ {rate:.1f}/s: {percentiles(delays)}")
    seen = percentiles([sse_arrivals[i] - due[i] for i in due if i in sse_arrivals])
    step["post_to_done_seen"] = {"received": seen.count, "latency_ms": seen.as_dict()}
    log(f"  POST -> DONE seen @ {rate:.1f}/s: {seen}")
    return step


async def _wait_for_arrivals(idents: list[str], *channels: dict[str, float]) -> None:
    """Until every request has arrived on every channel, or the bounded wait is over."""
    deadline = time.monotonic() + WAIT_FOR_ARRIVALS_SECONDS
    while time.monotonic() < deadline:
        if all(ident in arrivals for arrivals in channels for ident in idents):
            return
        await asyncio.sleep(0.1)
