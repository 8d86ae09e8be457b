"""The outbox change-data-capture relay: claims outbox rows and dispatches each by topic."""

from outbox_cdc.admission import WorkflowAdmission
from outbox_cdc.relay import OutboxRelay
from outbox_cdc.temporal_dispatch import TemporalDispatcher, process_request_input

__all__ = ["OutboxRelay", "TemporalDispatcher", "WorkflowAdmission", "process_request_input"]
