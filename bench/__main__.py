"""`python -m bench [--quick] [--out bench/results]`: start a stack, run every scenario, write results.

Order matters and is fixed: accept first, with the relay stopped (so the accept ramp measures only
the accept path and does not flood Temporal), its rows cleared; then the relay starts for end to
end; then notification latency at half of the sustained end-to-end rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.accept import clear_accepted, measure_accept
from bench.charts import write_chart
from bench.end_to_end import measure_end_to_end
from bench.notify import measure_notifications
from bench.profile import FULL, QUICK, Profile
from bench.report import markdown, write_results
from bench.stack import running_stack

DEFAULT_NOTIFY_RATE = 10.0


def log(message: str) -> None:
    print(message, flush=True)


async def run(profile: Profile) -> dict[str, Any]:
    """Every scenario against one freshly started stack."""
    results: dict[str, Any] = {}
    async with running_stack() as stack:
        log(f"stack up (logs in {stack.root / 'logs'}); accept vs bare INSERT:")
        results["accept"] = await measure_accept(stack, profile, log)
        await clear_accepted(stack.database_url)
        log("end to end vs raw Temporal:")
        results["end_to_end"] = await measure_end_to_end(stack, profile, log)
        sustained = results["end_to_end"]["ackflow"]["max_rate"]
        rate = sustained / 2 if sustained else DEFAULT_NOTIFY_RATE
        log("notification latency:")
        results["notify"] = await measure_notifications(stack, rate, profile.notify_seconds, log)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short steps: the whole run in under 2 minutes")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="where results go")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    started = datetime.now(UTC)
    clock = time.monotonic()
    results = asyncio.run(run(profile))
    results["meta"] = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "profile": profile.name,
        "duration_s": round(time.monotonic() - clock, 1),
        "cpus": os.cpu_count(),
        "platform": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
    }
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    paths = write_results(args.out, stamp, results)
    chart = write_chart(results, args.out / f"{stamp}.png")
    if chart is not None:
        (args.out / "latest.png").write_bytes(chart.read_bytes())
        paths.append(chart)
    else:
        log("no chart: matplotlib is not installed (pip install -e '.[bench]')")
    print("\n" + markdown(results), flush=True)
    log("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
