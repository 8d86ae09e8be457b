"""Record ProcessRequestWorkflow histories for the replay tests, from the real workflow and activities.

    .venv/bin/python -m tests.workflows.record_histories              # record the missing ones
    .venv/bin/python -m tests.workflows.record_histories --overwrite  # record all again

Run it from the repository root. It starts a throwaway Postgres (from the wheel) and Temporal's
time-skipping test server, runs one request down each path (DONE, FAILED, CANCELLED while running,
CANCELLED before its workflow started) and writes each history as `tests/workflows/histories/<path>.json`
(the same JSON as `temporal workflow show --output json`), then stops both servers. The
`options_from_worker_*.json` histories were recorded before handler options travelled in the
workflow's input (the workflow then asked a worker for them first); they stay to prove that
such runs still replay.

Keep the files once committed: they stand for workflows already running in production, and
`test_process_request_workflow.py` replays each one on the current code. If a change to the workflow
fails that replay, the change would break those workflows: guard it with `workflow.patched()` rather
than recording again. Record again (`--overwrite`) only the histories no running workflow can still
have; add a new path by adding a scenario below and running without `--overwrite`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from ackflow import devstack
from ackflow.contracts import CANCELLED, INIT, HandlerOptions
from ackflow.db.migrate import migrate
from ackflow.db.pool import create_pool
from ackflow.db.transitions import transition
from ackflow.handlers import HandlerRegistry
from tests.workflows.harness import Bench, Echo, Heartbeating, Refuses, start_time_skipping

HISTORIES = Path(__file__).parent / "histories"
RESULT_TIMEOUT = 30.0

Scenario = Callable[[Bench], Awaitable[WorkflowHandle[object, object]]]


async def done(bench: Bench) -> WorkflowHandle[object, object]:
    request_id = await bench.accept("echo", {"hello": "world"})
    handle = await bench.start(request_id, "echo")
    await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
    return handle


async def failed(bench: Bench) -> WorkflowHandle[object, object]:
    request_id = await bench.accept("refuses", {})
    handle = await bench.start(request_id, "refuses")
    await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
    return handle


async def cancelled_while_running(bench: Bench) -> WorkflowHandle[object, object]:
    sleeper = bench.registry.get("sleeper")
    assert sleeper is not None and isinstance(sleeper.function, Heartbeating)
    request_id = await bench.accept("sleeper", {})
    handle = await bench.start(request_id, "sleeper")
    await asyncio.wait_for(sleeper.function.started.wait(), RESULT_TIMEOUT)
    await handle.cancel()
    try:
        await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
    except WorkflowFailureError:
        pass
    else:
        raise AssertionError("the cancelled workflow completed instead of ending cancelled")
    await asyncio.wait_for(sleeper.function.cancelled.wait(), RESULT_TIMEOUT)
    return handle


async def cancelled_before_start(bench: Bench) -> WorkflowHandle[object, object]:
    request_id = await bench.accept("echo", {})
    assert await transition(bench.pool, request_id, CANCELLED, (INIT,))
    handle = await bench.start(request_id, "echo")
    await asyncio.wait_for(handle.result(), RESULT_TIMEOUT)
    return handle


SCENARIOS: dict[str, Scenario] = {
    "done": done,
    "failed": failed,
    "cancelled_while_running": cancelled_while_running,
    "cancelled_before_start": cancelled_before_start,
}


def scenario_registry() -> HandlerRegistry:
    registry = HandlerRegistry()
    registry.add("echo", Echo(), HandlerOptions(start_to_close_seconds=30))
    registry.add("refuses", Refuses("refused on purpose"), HandlerOptions(start_to_close_seconds=30))
    registry.add("sleeper", Heartbeating(seconds=30), HandlerOptions(start_to_close_seconds=3600, heartbeat_seconds=2))
    return registry


async def record(database_url: str, names: list[str]) -> None:
    """Run each named scenario on a fresh worker and write its history."""
    connection = await asyncpg.connect(database_url)
    try:
        await migrate(connection)
    finally:
        await connection.close()
    pool = await create_pool(database_url)
    env: WorkflowEnvironment | None = None
    try:
        env = await start_time_skipping()
        for name in names:
            bench = await Bench.create(env.client, pool, scenario_registry())
            async with bench.worker():
                handle = await SCENARIOS[name](bench)
            history = await handle.fetch_history()
            path = HISTORIES / f"{name}.json"
            path.write_text(history.to_json() + "\n", encoding="utf-8")
            print(f"recorded {path} ({len(history.events)} events)")
    finally:
        if env is not None:
            await env.shutdown()
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overwrite", action="store_true", help="record again the histories that already exist")
    args = parser.parse_args(argv)
    # The FAILED and cancelled scenarios fail their handler on purpose; the SDK would log each with a traceback.
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    HISTORIES.mkdir(exist_ok=True)
    names = [name for name in SCENARIOS if args.overwrite or not (HISTORIES / f"{name}.json").exists()]
    if not names:
        print(f"every history is already in {HISTORIES}; pass --overwrite to record them again")
        return 0
    with tempfile.TemporaryDirectory(prefix="ackflow-histories-") as state:
        port = devstack.free_port()
        postgres = devstack.start_postgres(Path(state), port, fast_unsafe=True)
        try:
            postgres.wait_until_ready()
            asyncio.run(record(devstack.create_database(port, "histories"), names))
        finally:
            postgres.stop()
    # Drop the Temporal client's native handles while Python is still fully alive: left to interpreter
    # shutdown they can abort the process (temporalio/sdk-python#300).
    gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
