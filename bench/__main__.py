"""`python -m bench [--quick] [--only NAME] [--out bench/results]`: start a stack, run the scenarios, write results.

Scenarios run in the fixed order of SCENARIOS on one stack; `--only NAME` picks some of them. The
results replace those scenarios' figures in `<out>/latest.json`, `latest.md` and `latest.png`
(bench/report.py); nothing else is written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.accept import clear_accepted, measure_accept
from bench.backlog import measure_backlog
from bench.batching import measure_batching
from bench.charts import write_chart
from bench.end_to_end import measure_end_to_end
from bench.fanout import measure_fanout
from bench.flow_control import measure_flow_control
from bench.notify import measure_notifications
from bench.profile import FULL, QUICK, Profile
from bench.relay_lag import measure_relay_lag
from bench.report import markdown, write_results
from bench.stack import Stack, running_stack
from bench.webhook_rate import measure_webhook_rate

DEFAULT_SUSTAINED_RATE = 20.0  # requests/s, when end to end did not run (about the 2-core dev machine's)
NOTIFY_FRACTIONS = (0.25, 0.5, 0.9)


def log(message: str) -> None:
    print(message, flush=True)


# One scenario: measures against the running stack; may read what earlier scenarios found.
Results = dict[str, Any]
Log = Callable[[str], None]
Scenario = Callable[[Stack, Profile, Results, Log], Awaitable[Results]]


async def _accept(stack: Stack, profile: Profile, results: Results, log: Log) -> Results:
    """Accept vs bare INSERT, with the relay stopped; its rows are cleared afterwards."""
    stack.stop("relay")
    try:
        return await measure_accept(stack, profile, log)
    finally:
        await clear_accepted(stack.database_url)


async def _backlog(stack: Stack, profile: Profile, results: Results, log: Log) -> Results:
    """Accept at half of accept's max (found earlier in the run, or a default) while 10,000 requests drain."""
    accept_max = results.get("accept", {}).get("accept", {}).get("max_rate")
    return await measure_backlog(stack, profile, log, accept_max=accept_max)


async def _flow_control(stack: Stack, profile: Profile, results: Results, log: Log) -> Results:
    """Claim cost and accept p99 with 10,000 waiting over 1,000 keys and 3 priorities, beside a plain backlog."""
    accept_max = results.get("accept", {}).get("accept", {}).get("max_rate")
    return await measure_flow_control(stack, profile, log, accept_max=accept_max)


async def _end_to_end(stack: Stack, profile: Profile, results: Results, log: Log) -> Results:
    stack.ensure_role("relay")
    return await measure_end_to_end(stack, profile, log)


async def _relay_lag(stack: Stack, profile: Profile, results: Results, log: Log) -> Results:
    return await measure_relay_lag(stack, profile, log)


async def _notify(stack: Stack, profile: Profile, results: Results, log: Log) -> Results:
    """At 25, 50 and 90 % of the sustained end-to-end rate found earlier in the run (or of a default)."""
    stack.ensure_role("relay")
    sustained = results.get("end_to_end", {}).get("ackflow", {}).get("max_rate") or DEFAULT_SUSTAINED_RATE
    rates = [round(sustained * fraction, 1) for fraction in NOTIFY_FRACTIONS]
    return await measure_notifications(stack, rates, profile.notify_seconds, log) | {"sustained": sustained}


async def _fanout(stack: Stack, profile: Profile, results: Results, log: Log) -> Results:
    """Idle SSE clients on one gateway (restarted per size; the relay is paused while they connect)."""
    return await measure_fanout(stack, profile.fanout_clients, log)


async def _webhooks(stack: Stack, profile: Profile, results: Results, log: Log) -> Results:
    return await measure_webhook_rate(stack, profile.webhook_deliveries, log)


async def _batching(stack: Stack, profile: Profile, results: Results, log: Log) -> Results:
    """Batch max 1, 10, 50 beside raw Temporal (the relay restarted per batch max, back to defaults after)."""
    return await measure_batching(stack, profile, log)


# In running order: accept first (relay stopped, so the ramp does not flood Temporal); notification
# after end to end, whose sustained rate it is measured at; batching last, since it leaves its
# requests (tens of thousands in the full profile) in the tables.
SCENARIOS: dict[str, Scenario] = {
    "accept": _accept,
    "backlog": _backlog,
    "flow_control": _flow_control,
    "end_to_end": _end_to_end,
    "relay_lag": _relay_lag,
    "notify": _notify,
    "fanout": _fanout,
    "webhooks": _webhooks,
    "batching": _batching,
}


async def run(profile: Profile, only: list[str]) -> dict[str, Any]:
    """The chosen scenarios (all by default), in order, against one freshly started stack."""
    results: dict[str, Any] = {}
    took: dict[str, float] = {}
    async with running_stack() as stack:
        log(f"stack up (logs in {stack.root / 'logs'})")
        for name, scenario in SCENARIOS.items():
            if only and name not in only:
                continue
            log(f"{name.replace('_', ' ')}:")
            clock = time.monotonic()
            results[name] = await scenario(stack, profile, results, log)
            took[name] = round(time.monotonic() - clock, 1)
            log(f"  ({took[name]:.0f} s)")
    return results | {"scenario_seconds": took}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short steps: the whole run in about 5 minutes")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="where latest.* go")
    parser.add_argument(
        "--only", action="append", choices=list(SCENARIOS), default=[], help="run just this scenario (repeatable)"
    )
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    started = datetime.now(UTC)
    clock = time.monotonic()
    results = asyncio.run(run(profile, args.only))
    results["meta"] = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "profile": profile.name,
        "duration_s": round(time.monotonic() - clock, 1),
        "scenario_seconds": results.pop("scenario_seconds"),
        "cpus": os.cpu_count(),
        "platform": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
    }
    latest, paths = write_results(args.out, results)
    chart = write_chart(latest, args.out / "latest.png")
    if chart is not None:
        paths.append(chart)
    else:
        log("no chart: matplotlib is not installed (pip install -e '.[bench]')")
    print("\n" + markdown(latest), flush=True)
    log("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
