"""Temporal workflow definitions: deterministic, no I/O. Activities do the I/O."""

from workflows.process_batch import ProcessBatchWorkflow
from workflows.process_request import ProcessRequestWorkflow
from workflows.webhook_retry import WebhookRetryWorkflow

__all__ = ["ProcessBatchWorkflow", "ProcessRequestWorkflow", "WebhookRetryWorkflow"]
