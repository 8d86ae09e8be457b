"""The example workflow kind `pipeline`, enabled by `ackflow dev` (ACKFLOW_HANDLERS=examples.pipeline):
fetch -> transform (with progress) -> wait for approval -> publish. Each step is a Temporal
activity; the wait is durable (a worker may die meanwhile, or the approval may take a day).

    POST /v1/requests {"kind": "pipeline", "payload": {"items": 20}}
    ... progress 5 % "fetched 20 items", 10 %..80 % "transformed 7 of 20", then `waiting: {input: "approval"}`
    POST /v1/requests/{id}/input {"name": "approval", "value": {"approved": true, "by": "ana"}}
    ... DONE {"published": ..., "items": 20, "approved_by": "ana"}; {"approved": false} ends it FAILED.

`items` (1-1000, default 10) and `step_seconds` (0-10, default 0.2) shape the transform step.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from ackflow import progress, wait_for_input, workflow_kind

STEP = timedelta(minutes=5)
RETRY = RetryPolicy(maximum_attempts=3)


@activity.defn(name="pipeline_fetch")
async def fetch(payload: dict[str, Any]) -> dict[str, Any]:
    """Stands in for reading the work's input from elsewhere: checks the payload, lists the items."""
    items, step_seconds = payload.get("items", 10), payload.get("step_seconds", 0.2)
    if not isinstance(items, int) or isinstance(items, bool) or not 1 <= items <= 1000:
        raise ApplicationError("items must be a whole number from 1 to 1000", type="InvalidPayload", non_retryable=True)
    if not isinstance(step_seconds, int | float) or not 0 <= step_seconds <= 10:
        raise ApplicationError("step_seconds must be from 0 to 10", type="InvalidPayload", non_retryable=True)
    await progress(0.05, f"fetched {items} items")
    return {"items": items, "step_seconds": float(step_seconds)}


@activity.defn(name="pipeline_transform")
async def transform(fetched: dict[str, Any]) -> dict[str, Any]:
    """Works through the items, reporting progress from 10 % to 80 % and heartbeating (so a cancel stops it)."""
    items = int(fetched["items"])
    for done in range(1, items + 1):
        await asyncio.sleep(float(fetched["step_seconds"]))
        activity.heartbeat(done)
        await progress(0.1 + 0.7 * done / items, f"transformed {done} of {items}", partial={"transformed": done})
    return {"items": items, "checksum": items * (items + 1) // 2}


@activity.defn(name="pipeline_publish")
async def publish(transformed: dict[str, Any]) -> dict[str, Any]:
    await progress(1.0, "published")
    return {"published": f"https://example.invalid/results/{transformed['checksum']}", "items": transformed["items"]}


@workflow_kind("pipeline", activities=[fetch, transform, publish], timeout=7 * 24 * 3600, name="ExamplePipeline")
class ExamplePipeline:
    @workflow.run
    async def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        fetched = await workflow.execute_activity(fetch, payload, start_to_close_timeout=STEP, retry_policy=RETRY)
        transformed = await workflow.execute_activity(
            transform,
            fetched,
            start_to_close_timeout=timedelta(hours=3),
            heartbeat_timeout=timedelta(seconds=15),
            retry_policy=RETRY,
        )
        approval = await wait_for_input("approval", timeout=timedelta(days=1))
        if not isinstance(approval, dict) or approval.get("approved") is not True:
            by = approval.get("by") if isinstance(approval, dict) else None
            raise ApplicationError(f"not approved{f' by {by}' if by else ''}", type="NotApproved", non_retryable=True)
        published = await workflow.execute_activity(
            publish, transformed, start_to_close_timeout=STEP, retry_policy=RETRY
        )
        return {**published, "approved_by": approval.get("by")}
