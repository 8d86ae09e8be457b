"""Workflows changed the wrong way, to prove replay catches it: a ProcessRequestWorkflow that skips
start_processing; a ProcessBatchWorkflow that runs each request in its own activity, and one that runs
the batch in one regular run_batch activity (the shape before run_batch became a local activity); a
WebhookRetryWorkflow that attempts again without waiting."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from ackflow.contracts import (
        DONE,
        PROCESS_BATCH_WORKFLOW,
        PROCESS_REQUEST_WORKFLOW,
        WEBHOOK_RETRY_SCHEDULE_SECONDS,
        WEBHOOK_RETRY_WORKFLOW,
        ProcessBatchInput,
        ProcessRequestInput,
        RunBatchInput,
        RunHandlerInput,
        WebhookAttemptInput,
        WebhookAttemptOutput,
        WebhookRetryInput,
    )


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


@workflow.defn(name=PROCESS_BATCH_WORKFLOW)
class ProcessBatchWorkflow:
    """Runs each request in its own run_handler activity, not the batch in one run_batch: incompatible."""

    @workflow.run
    async def run(self, batch: ProcessBatchInput) -> str:
        for request in batch.requests:
            await workflow.execute_activity(
                "run_handler",
                RunHandlerInput(request.request_id, request.kind),
                start_to_close_timeout=timedelta(minutes=5),
            )
        return f"{len(batch.requests)} requests ended"


@workflow.defn(name=PROCESS_BATCH_WORKFLOW)
class RegularActivityBatchWorkflow:
    """Runs the batch in one regular run_batch activity rather than a local one per kind: incompatible."""

    @workflow.run
    async def run(self, batch: ProcessBatchInput) -> str:
        await workflow.execute_activity(
            "run_batch", RunBatchInput(batch.requests), start_to_close_timeout=timedelta(minutes=5)
        )
        return f"{len(batch.requests)} requests ended"


@workflow.defn(name=WEBHOOK_RETRY_WORKFLOW)
class WebhookRetryWorkflow:
    """Attempts the delivery again at once, with no timer before each attempt: incompatible."""

    @workflow.run
    async def run(self, retry: WebhookRetryInput) -> str:
        for _ in WEBHOOK_RETRY_SCHEDULE_SECONDS:
            outcome = await workflow.execute_activity(
                "attempt_webhook",
                WebhookAttemptInput(retry.delivery_id, workflow.now().isoformat()),
                result_type=WebhookAttemptOutput,
                start_to_close_timeout=timedelta(seconds=60),
            )
            if outcome.state != "retrying":
                return str(outcome.state)
        return "failed"
