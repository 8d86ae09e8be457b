"""Handlers used only by tests, loaded next to the examples."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ackflow.handlers import PermanentError, handler
from ackflow.progress_reports import progress

_attempts: dict[str, int] = {}


@handler("flaky", timeout=10, max_attempts=5, initial_retry=0.1, max_retry=0.2)
async def flaky(payload: Any) -> dict[str, Any]:
    """Fails `payload["failures"]` times per `payload["key"]`, then returns how many attempts it took."""
    key = str(payload["key"])
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] <= int(payload.get("failures", 0)):
        raise RuntimeError(f"transient failure {_attempts[key]}")
    return {"attempts": _attempts[key]}


@handler("nul_result", timeout=10, max_attempts=3)
async def nul_result(payload: Any) -> dict[str, str]:
    """Returns a string Postgres jsonb cannot store."""
    return {"text": "before\u0000after"}


@handler("big_result", timeout=10, max_attempts=3)
async def big_result(payload: Any) -> dict[str, str]:
    """Returns more than the 1 MiB a result may be."""
    return {"blob": "x" * (1024 * 1024 + 1)}


@handler("nap_in_pairs", timeout=60, max_attempts=2, concurrency_limit=2)
async def nap_in_pairs(payload: Any) -> dict[str, float]:
    """As `nap`, two at a time per concurrency key unless a request says otherwise (the kind's limit)."""
    return await nap(payload)


@handler("nap", timeout=60, max_attempts=2)
async def nap(payload: Any) -> dict[str, float]:
    """Sleeps `payload["seconds"]` without heartbeating: a slow handler that runs in its batch."""
    seconds = float(payload.get("seconds", 1))
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@handler("log_line", timeout=10, max_attempts=1)
async def log_line(payload: Any) -> dict[str, str]:
    """Logs `payload["note"]` at WARNING, then fails with it: what a handler says about its request."""
    logging.getLogger("tests.handlers").warning("handling: %s", payload["note"])
    raise PermanentError(f"gave up on {payload['note']}")


@handler("steps", timeout=60, max_attempts=1)
async def steps(payload: Any) -> dict[str, int]:
    """Reports progress `payload["reports"]` times, `payload["gap"]` seconds apart: i/n done, "step i",
    partial {"step": i}."""
    reports, gap = int(payload["reports"]), float(payload.get("gap", 0))
    for i in range(1, reports + 1):
        if gap:
            await asyncio.sleep(gap)
        await progress(i / reports, f"step {i}", partial={"step": i})
    return {"steps": reports}
