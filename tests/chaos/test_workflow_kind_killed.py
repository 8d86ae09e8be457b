"""Every worker SIGKILLed in the middle of a workflow kind's step, and again while it waits for its
approval: Temporal resumes the example pipeline on a new worker, the approval sent while no worker
runs reaches it, and the request ends DONE once, its progress never moving back.

The transform step heartbeats (examples/pipeline.py, a 15 s heartbeat timeout): its attempt on the
dead worker times out and Temporal runs it again on the new one, from its first item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from ackflow.db.pool import create_pool
from tests.chaos.stack import running_stack, tenant_once_registered
from tests.helpers import assert_eventually

REPOSITORY = Path(__file__).resolve().parents[2]
WORKERS = ("worker-1", "worker-2")
# The transform's heartbeat timeout, its rerun (8 items of 0.5 s) and the time a new worker takes to start.
SETTLE_SECONDS = 15 + 4 + 60


async def test_a_pipeline_whose_workers_are_killed_mid_step_and_while_waiting_resumes_and_ends_done_once(
    chaos_root: Path,
) -> None:
    handlers = {"ACKFLOW_HANDLERS": "activities.examples,examples.pipeline", "PYTHONPATH": str(REPOSITORY)}
    async with running_stack(chaos_root, handlers) as stack:
        pool = await create_pool(stack.database_url, size=2)
        try:
            key = await tenant_once_registered(pool, "pipeline-killed", "pipeline")
            headers = {"Authorization": f"Bearer {key.key}"}
            async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as api:
                body = {"kind": "pipeline", "payload": {"items": 8, "step_seconds": 0.5}}
                accepted = await api.post("/v1/requests", json=body)
                assert accepted.status_code == 202, accepted.text
                request_id = accepted.json()["id"]

                async def state_when(check: Any) -> dict[str, Any] | None:
                    state: dict[str, Any] = (await api.get(f"/v1/requests/{request_id}")).json()
                    return state if check(state) else None

                def transforming(state: dict[str, Any]) -> bool:
                    return str((state.get("progress") or {}).get("message", "")).startswith("transformed")

                mid_step = await assert_eventually(
                    lambda: state_when(transforming), timeout=60, message="the transform step never began"
                )
                for worker in WORKERS:  # whichever runs the step, it dies now
                    stack.kill(worker)
                await stack.restart("worker-1")

                waiting = await assert_eventually(
                    lambda: state_when(lambda state: state.get("waiting") is not None),
                    timeout=SETTLE_SECONDS,
                    message="the pipeline never resumed to wait for its approval",
                )
                assert waiting["progress"]["fraction"] >= mid_step["progress"]["fraction"]
                stack.kill("worker-1")

                approved = await api.post(
                    f"/v1/requests/{request_id}/input", json={"name": "approval", "value": {"approved": True}}
                )
                assert approved.status_code == 202, approved.text
                await stack.restart("worker-2")

                done = await assert_eventually(
                    lambda: state_when(lambda state: state["status"] in ("DONE", "FAILED", "CANCELLED")),
                    timeout=SETTLE_SECONDS,
                    message="the pipeline never ended after its approval",
                )
                assert done["status"] == "DONE", done
                assert done["result"]["items"] == 8 and done["progress"]["fraction"] == 1.0

            events = await pool.fetch(
                "SELECT topic, version, (data -> 'progress' ->> 'fraction')::float8 AS fraction"
                "  FROM request_events WHERE request_id = $1 ORDER BY version",
                request_id,
            )
            topics = [event["topic"] for event in events]
            assert [event["version"] for event in events] == list(range(1, len(events) + 1)), "one event a version"
            for once in ("request.processing", "request.waiting", "request.input_received", "request.done"):
                assert topics.count(once) == 1, (once, topics)
            fractions = [event["fraction"] for event in events if event["topic"] == "request.progress"]
            assert fractions == sorted(fractions), f"the rerun step moved the progress back: {fractions}"
        finally:
            await pool.close()
