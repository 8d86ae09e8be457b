"""Scenario "accept": POST /v1/requests against the bare INSERT endpoint, ramped side by side.

Both get the same body over the same kind of connection pool. Each one's max sustainable rate is
found by the ramp; then each runs again at half its max, where the p99 target applies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec

from bench.cpu import cpu_per_request, cpu_seconds, cpu_spent
from bench.httpool import ClientPool
from bench.loadgen import Send, Step, run_open_loop
from bench.profile import Profile
from bench.ramp import ramp_interleaved
from bench.stack import Stack

BODY = msgspec.json.encode({"kind": "echo", "payload": {"hello": "world"}})
CONNECTIONS = 64


def client_pool(base_url: str, api_key: str | None = None) -> ClientPool:
    """Keep-alive connections to one target, with the API key if it needs one."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return ClientPool(base_url, CONNECTIONS, headers)


def poster(pool: ClientPool) -> Send:
    """POST the body to /v1/requests; the new request's id on 202, else raise."""

    async def send() -> str | None:
        async with pool.client() as http:
            response = await http.post("/v1/requests", content=BODY)
        if response.status_code != 202:
            raise RuntimeError(f"answered {response.status_code}")
        return str(response.json()["id"])

    return send


async def measure_accept(stack: Stack, profile: Profile, log: Callable[[str], None]) -> dict[str, Any]:
    """Ramp both, then half-load both; the ratio of their max rates."""
    async with client_pool(stack.bare_url) as bare, client_pool(stack.gateway_url, stack.api_key) as gateway:
        sends = {"bare": poster(bare), "accept": poster(gateway)}
        for send in sends.values():  # open connections, warm caches (auth, rate, prepared statements)
            await run_open_loop(send, 100, 1.0)
        pids = stack.pids()
        ramps = await ramp_interleaved(
            {name: _stepper(send, profile.accept_step_seconds, pids) for name, send in sends.items()},
            profile.accept_rates,
            profile.accept_p99_bound_ms,
            log=log,
        )
        result: dict[str, Any] = {"p99_bound_ms": profile.accept_p99_bound_ms}
        for name, ramp in ramps.items():
            half: Step | None = None
            if ramp.max_rate:
                half = await run_open_loop(sends[name], ramp.max_rate / 2, profile.half_load_seconds)
                log(f"  {name:>8} @ half max {ramp.max_rate / 2:.0f}/s: p99 {half.latency().p99} ms")
            result[name] = {
                "max_rate": ramp.max_rate,
                "capped_by_ramp": not ramp.broke,
                "steps": [s.summary() | {"sustainable": ok} for s, ok in zip(ramp.steps, ramp.verdicts, strict=True)],
                "half_max": half.summary() if half else None,
                "cpu_ms_per_request": cpu_per_request(ramp.sustained),
            }
    bare_max = result["bare"]["max_rate"]
    result["ratio"] = round(result["accept"]["max_rate"] / bare_max, 3) if bare_max else None
    return result


def _stepper(send: Send, seconds: float, pids: dict[str, int]) -> Callable[[float], Any]:
    """One step at `rate`, with each process's CPU over it."""

    async def run(rate: float) -> Step:
        before = cpu_seconds(pids)
        step = await run_open_loop(send, rate, seconds)
        step.cpu = cpu_spent(before, cpu_seconds(pids))
        return step

    return run


async def clear_accepted(database_url: str) -> None:
    """Forget what the accept scenario wrote (the relay was not running), so later scenarios start empty
    (the concurrency keys' counts with the requests: truncating skips the trigger that keeps them)."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "TRUNCATE outbox, request_events, request_inputs, requests, bare_requests, concurrency_slots"
        )
    finally:
        await connection.close()
