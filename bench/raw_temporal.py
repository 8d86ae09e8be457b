"""The end-to-end ceiling: raw Temporal, a workflow that runs one no-op activity, nothing else.

The worker runs in its own process (`python -m bench.raw_temporal ADDRESS TASK_QUEUE`) with the
same slot limits as ackflow's worker (activities/worker.py), against the same dev server; the
benchmark process starts the workflows with `start_workflow`, as ackflow's relay does.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

WORKFLOW_NAME = "BenchNoop"


@activity.defn(name="bench_noop")
async def noop(value: str) -> str:
    """Do nothing: the point is what Temporal itself costs."""
    return value


@workflow.defn(name=WORKFLOW_NAME, sandboxed=False)  # like ProcessRequestWorkflow: compare like with like
class NoopWorkflow:
    """Runs the no-op activity once."""

    @workflow.run
    async def run(self, value: str) -> str:
        return await workflow.execute_activity(noop, value, start_to_close_timeout=timedelta(seconds=30))


async def serve(address: str, task_queue: str) -> None:
    """Run the worker until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    client = await Client.connect(address)
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[NoopWorkflow],
        activities=[noop],
        max_concurrent_activities=100,
        max_concurrent_workflow_tasks=20,
        max_concurrent_local_activities=50,
    )
    async with worker:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
