"""Admission control: start request workflows only as fast as Temporal finishes them.

A burst of accepted requests waits in the outbox (durable, visible, cheap) rather than in Temporal,
where thousands of started workflows only turn into queueing and, with many workflow-task slots,
have been seen to collapse throughput. A request counts from the relay's start of its workflow
(`requests.workflow_started_at`) until it has `completed_at`.
"""

from __future__ import annotations


class WorkflowAdmission:
    """At most `max_in_flight` request workflows started and not yet finished, across all relays.

    The relay's claim (`claim_outbox`) takes `request.accepted` rows only as far as this leaves room,
    and its finishing statement records which requests' workflows it started.
    """

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
