"""Replay of the example workflow kind's recorded runs (examples/pipeline.py, `ExamplePipeline`).

A workflow kind's run is a child of its request's batch; the batch's side of the same runs is in
`histories/batch/batch_pipeline_*.json`, replayed with the other batch histories. Record them with
`.venv/bin/python -m tests.workflows.record_histories` (see there when to record again).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

with workflow.unsafe.imports_passed_through():
    from ackflow import wait_for_input
    from examples.pipeline import STEP, ExamplePipeline, fetch, publish, transform

HISTORIES = Path(__file__).parent / "histories"
WORK_HISTORIES = HISTORIES / "work"
RECORDED_WORK_PATHS = {"pipeline_approved", "pipeline_rejected", "pipeline_cancelled_while_waiting"}


@workflow.defn(name="ExamplePipeline")
class ApprovalFirstPipeline:
    """A changed pipeline that asks for approval before it fetches: no longer what the recorded runs did."""

    @workflow.run
    async def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        await wait_for_input("approval", timeout=timedelta(days=1))
        fetched = await workflow.execute_activity(fetch, payload, start_to_close_timeout=STEP)
        transformed = await workflow.execute_activity(transform, fetched, start_to_close_timeout=STEP)
        result: dict[str, Any] = await workflow.execute_activity(publish, transformed, start_to_close_timeout=STEP)
        return result


def recorded_work_histories() -> list[Path]:
    return sorted(WORK_HISTORIES.glob("*.json"))


def load_history(path: Path) -> WorkflowHistory:
    """A run's history under its own workflow id (`work-<request id>`, which its steps read), taken
    from the batch that started it: the run's history itself does not hold it."""
    batch = json.loads((HISTORIES / "batch" / f"batch_{path.stem}.json").read_text(encoding="utf-8"))
    starts = [
        event["startChildWorkflowExecutionInitiatedEventAttributes"]["workflowId"]
        for event in batch["events"]
        if "startChildWorkflowExecutionInitiatedEventAttributes" in event
    ]
    assert len(starts) == 1, f"batch_{path.stem}.json started {len(starts)} runs"
    return WorkflowHistory.from_json(starts[0], path.read_text(encoding="utf-8"))


def test_recorded_pipeline_histories_cover_approved_rejected_and_cancelled_while_waiting() -> None:
    assert {path.stem for path in recorded_work_histories()} >= RECORDED_WORK_PATHS, (
        "record them with: .venv/bin/python -m tests.workflows.record_histories"
    )


@pytest.mark.parametrize("path", recorded_work_histories(), ids=lambda path: path.stem)
async def test_recorded_pipeline_history_replays_on_the_current_example_without_nondeterminism(path: Path) -> None:
    result = await Replayer(workflows=[ExamplePipeline]).replay_workflow(
        load_history(path), raise_on_replay_failure=False
    )

    assert result.replay_failure is None, f"{path.name}: {result.replay_failure!r}"


async def test_replay_fails_as_nondeterministic_when_the_pipeline_no_longer_matches_a_recorded_run() -> None:
    history = load_history(WORK_HISTORIES / "pipeline_approved.json")

    result = await Replayer(workflows=[ApprovalFirstPipeline]).replay_workflow(history, raise_on_replay_failure=False)

    assert isinstance(result.replay_failure, NondeterminismError), repr(result.replay_failure)
