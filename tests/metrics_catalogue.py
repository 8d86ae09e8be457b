"""The metric catalogue as dashboards and alerts rely on it (the fixed list the ops side queries):
name in the exposition -> (type, label names). Shared by the unit and end-to-end metrics tests."""

from __future__ import annotations

CATALOGUE: dict[str, tuple[str, tuple[str, ...]]] = {
    # gateway
    "ackflow_accepts_total": ("counter", ("tenant", "kind", "status")),
    "ackflow_accept_duration_seconds": ("histogram", ()),
    "ackflow_streams_open": ("gauge", ("transport",)),
    # relay
    "ackflow_outbox_rows": ("gauge", ("topic",)),
    "ackflow_outbox_oldest_age_seconds": ("gauge", ("topic",)),
    "ackflow_outbox_dead_letters": ("gauge", ()),
    "ackflow_outbox_dead_lettered_total": ("counter", ("topic",)),
    "ackflow_relay_lag_seconds": ("histogram", ("topic",)),
    "ackflow_relay_dispatch_errors_total": ("counter", ("topic",)),
    "ackflow_requests_in_flight": ("gauge", ("tenant",)),
    "ackflow_requests_waiting_admission": ("gauge", ("tenant",)),
    "ackflow_admission_oldest_wait_seconds": ("gauge", ()),
    "ackflow_deliveries": ("gauge", ("state",)),
    "ackflow_webhook_endpoints_disabled": ("gauge", ()),
    # worker
    "ackflow_handler_duration_seconds": ("histogram", ("kind", "outcome")),
    "ackflow_status_transitions_total": ("counter", ("status",)),
    "ackflow_webhook_attempts_total": ("counter", ("outcome",)),
    "ackflow_webhook_attempt_duration_seconds": ("histogram", ()),
    # every role
    "ackflow_dependency_up": ("gauge", ("dependency",)),
    "ackflow_build_info": ("gauge", ("version",)),
}
