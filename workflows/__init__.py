"""Temporal workflow definitions: deterministic, no I/O. Activities do the I/O."""

from workflows.process_request import ProcessRequestWorkflow

__all__ = ["ProcessRequestWorkflow"]
