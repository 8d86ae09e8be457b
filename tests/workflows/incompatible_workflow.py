"""A ProcessRequestWorkflow changed the wrong way (it skips start_processing), to prove replay catches it."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from ackflow.contracts import DONE, PROCESS_REQUEST_WORKFLOW, ProcessRequestInput, RunHandlerInput


@workflow.defn(name=PROCESS_REQUEST_WORKFLOW)
class ProcessRequestWorkflow:
    """Runs the handler without first recording PROCESSING: incompatible with every recorded history."""

    @workflow.run
    async def run(self, request: ProcessRequestInput) -> str:
        await workflow.execute_activity(
            "run_handler",
            RunHandlerInput(request.request_id, request.kind),
            start_to_close_timeout=timedelta(minutes=5),
        )
        return DONE
