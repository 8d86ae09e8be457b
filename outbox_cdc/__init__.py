"""The outbox change-data-capture relay: claims outbox rows and dispatches each by topic."""

from outbox_cdc.admission import WorkflowAdmission
from outbox_cdc.cancel import CancelRequestRoute
from outbox_cdc.expiry import ExpirySweep
from outbox_cdc.reconcile import Reconciler
from outbox_cdc.relay import DeadLetterLimits, OutboxRelay
from outbox_cdc.supersede import SupersedeRoute
from outbox_cdc.temporal_dispatch import TemporalDispatcher, process_batch_input, process_request_input

__all__ = [
    "CancelRequestRoute",
    "DeadLetterLimits",
    "ExpirySweep",
    "OutboxRelay",
    "Reconciler",
    "SupersedeRoute",
    "TemporalDispatcher",
    "WorkflowAdmission",
    "process_batch_input",
    "process_request_input",
]
