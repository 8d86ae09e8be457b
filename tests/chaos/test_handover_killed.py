"""A worker SIGKILLed while a handler its batch handed over still runs: the request runs again elsewhere, once.

run_batch (a local activity) hands a handler still running after LOCAL_BUDGET_SECONDS to
`await_requests` on its worker's own task queue. When that worker dies, the handler dies with it;
the activity's heartbeat times out and the batch runs the request alone, on another worker.
"""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client
from temporalio.service import RPCError

from ackflow.db.accept import accept_request
from ackflow.db.pool import create_pool
from ackflow.ids import new_request_id
from activities.request_activities import LOCAL_BUDGET_SECONDS
from tests.chaos.stack import running_stack, tenant_once_registered
from tests.helpers import assert_eventually

REPOSITORY = Path(__file__).resolve().parents[2]
# The heartbeat timeout of await_requests (workflows/process_batch.py HANDOVER_TIMEOUT), and the nap twice.
SETTLE_SECONDS = 30 + 2 * 2 * LOCAL_BUDGET_SECONDS + 30


async def test_a_handed_over_handler_whose_worker_is_killed_runs_again_alone_and_ends_done_once(
    chaos_root: Path,
) -> None:
    handlers = {"ACKFLOW_HANDLERS": "activities.examples,tests.handlers", "PYTHONPATH": str(REPOSITORY)}
    async with running_stack(chaos_root, handlers) as stack:
        pool = await create_pool(stack.database_url, size=2)
        try:
            tenant = await tenant_once_registered(pool, "handover", "nap")
            request_id = new_request_id()
            payload = {"seconds": 2 * LOCAL_BUDGET_SECONDS}
            assert await accept_request(pool, request_id, tenant.tenant_id, "nap", payload) is not None  # relays poll
            temporal = await Client.connect(f"127.0.0.1:{stack.ports['temporal']}")

            async def handed_over() -> bool:
                workflow_id = await pool.fetchval("SELECT workflow_id FROM requests WHERE id = $1", request_id)
                if workflow_id is None:
                    return False
                try:
                    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
                except RPCError:  # claimed, not yet started
                    return False
                return any(
                    e.activity_task_scheduled_event_attributes.activity_type.name == "await_requests"
                    for e in history.events
                    if e.HasField("activity_task_scheduled_event_attributes")
                )

            await assert_eventually(handed_over, timeout=60, message="the handler was never handed over")
            for worker in ("worker-1", "worker-2"):  # whichever ran it, its handler dies now
                stack.kill(worker)
            await stack.restart("worker-1")

            async def done() -> bool:
                return await pool.fetchval("SELECT status FROM requests WHERE id = $1", request_id) == "DONE"

            await assert_eventually(done, timeout=SETTLE_SECONDS, message="the request never ended")
            workflow_id = await pool.fetchval("SELECT workflow_id FROM requests WHERE id = $1", request_id)
            history = await temporal.get_workflow_handle(workflow_id).fetch_history()
            scheduled = [
                e.activity_task_scheduled_event_attributes.activity_type.name
                for e in history.events
                if e.HasField("activity_task_scheduled_event_attributes")
            ]
            assert scheduled == ["await_requests", "run_handler"], "it ran again alone, once"
            done_events = await pool.fetchval(
                "SELECT count(*) FROM request_events WHERE request_id = $1 AND topic = 'request.done'", request_id
            )
            assert done_events == 1
        finally:
            await pool.close()
