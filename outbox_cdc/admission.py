"""Admission control: start request workflows only as fast as Temporal finishes them, fairly.

A burst of accepted requests waits in the outbox (durable, visible, cheap) rather than in Temporal,
where thousands of started workflows only turn into queueing and, with many workflow-task slots,
have been seen to collapse throughput. A request counts from the claim that admits it
(`requests.admitted_at`, set in the claim statement itself, so every relay sees it) until it has
`completed_at`; a failed dispatch gives its place back.

The room is shared between tenants by weight (`tenants.admission_weight`, `ackflow tenant
set-weight`): a tenant alone may use all of it; with several tenants busy, each is guaranteed its
weighted share, admitted even when another tenant borrowed the whole room while it was alone (so
the total may exceed `max_in_flight` until the borrowed places are given back, up to twice it).
The statement is the function `ackflow_claim_outbox` of migration 0009.
"""

from __future__ import annotations


class WorkflowAdmission:
    """At most `max_in_flight` request workflows admitted and not yet finished, across all relays,
    shared fairly between tenants (see the module docstring)."""

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
