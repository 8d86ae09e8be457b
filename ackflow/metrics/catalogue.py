"""Every Prometheus metric ackflow exports: the fixed catalogue that dashboards and alerts query.

Label values are bounded, always: a tenant's *name* (tenants are few and made by operators), a kind
a worker registered (or "unknown"), an outbox topic, an HTTP status code, a delivery state, and the
small fixed sets below. Never a request id, a key, a URL or anything a client chooses freely: each
distinct label value is a series Prometheus keeps, so an unbounded one would grow without end.

The metric objects are module-level, registered in prometheus-client's default REGISTRY when this
module is first imported: that is the library's idiom (a metric is declared once per process and
updated from anywhere), and it means `ackflow dev`, which runs every role in one process, exposes
every role's metrics in one place. The gauges read from Postgres are set at scrape time
(ackflow/metrics/stages.py); the rest are updated where the work happens.
"""

from __future__ import annotations

from importlib import metadata

from prometheus_client import Counter, Gauge, Histogram

# Fixed label values.
TRANSPORTS = ("sse", "websocket", "long_poll")
HANDLER_OUTCOMES = ("done", "failed", "cancelled", "retry")
WEBHOOK_OUTCOMES = ("delivered", "rejected", "timeout", "error", "refused")
DEPENDENCIES = ("postgres", "redis", "temporal")
UNAUTHENTICATED = "unauthenticated"  # the tenant of an answer to a caller without a valid key
UNKNOWN_KIND = "unknown"  # the kind of a refused request whose kind no request was accepted for

# Buckets in seconds, spread over what each measures: the accept path is milliseconds, a relay's lag
# is milliseconds when it keeps up and minutes behind a backlog, handlers are whatever users write.
ACCEPT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
HANDLER_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
WEBHOOK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0)

# gateway
ACCEPTS = Counter(
    "ackflow_accepts",
    "Answers to POST /v1/requests, by tenant name, kind and HTTP status.",
    ["tenant", "kind", "status"],
)
ACCEPT_DURATION = Histogram(
    "ackflow_accept_duration_seconds", "Time to handle POST /v1/requests.", buckets=ACCEPT_BUCKETS
)
STREAMS_OPEN = Gauge("ackflow_streams_open", "Streams open on this gateway, by transport.", ["transport"])

# relay (stage health: set from Postgres at scrape time, by the relay role only)
OUTBOX_ROWS = Gauge(
    "ackflow_outbox_rows", "Outbox rows waiting to be relayed (not dead-lettered), by topic.", ["topic"]
)
OUTBOX_OLDEST_AGE = Gauge(
    "ackflow_outbox_oldest_age_seconds", "Age of the oldest waiting outbox row, by topic (0 when none).", ["topic"]
)
OUTBOX_DEAD_LETTERS = Gauge("ackflow_outbox_dead_letters", "Dead-lettered outbox rows now.")
REQUESTS_IN_FLIGHT = Gauge("ackflow_requests_in_flight", "Requests admitted and not yet ended, by tenant.", ["tenant"])
REQUESTS_WAITING_ADMISSION = Gauge(
    "ackflow_requests_waiting_admission", "Requests accepted, due and not yet admitted, by tenant.", ["tenant"]
)
ADMISSION_OLDEST_WAIT = Gauge(
    "ackflow_admission_oldest_wait_seconds", "Age of the oldest request waiting for admission (0 when none)."
)
DELIVERIES = Gauge("ackflow_deliveries", "Webhook deliveries by state (succeeded ones are not counted).", ["state"])
WEBHOOK_ENDPOINTS_DISABLED = Gauge("ackflow_webhook_endpoints_disabled", "Webhook endpoints disabled (not deleted).")

# relay (this process's own work)
OUTBOX_DEAD_LETTERED = Counter(
    "ackflow_outbox_dead_lettered", "Outbox rows this process dead-lettered, by topic.", ["topic"]
)
RELAY_LAG = Histogram(
    "ackflow_relay_lag_seconds",
    "From an outbox row's commit to its dispatch, by topic (a batch: from its oldest request's accept).",
    ["topic"],
    buckets=LAG_BUCKETS,
)
RELAY_DISPATCH_ERRORS = Counter(
    "ackflow_relay_dispatch_errors",
    "Failed dispatches of outbox rows (postponed or dead-lettered), by topic.",
    ["topic"],
)

# worker
HANDLER_DURATION = Histogram(
    "ackflow_handler_duration_seconds",
    "Time a handler ran, by kind and outcome (done, failed, cancelled, retry).",
    ["kind", "outcome"],
    buckets=HANDLER_BUCKETS,
)
STATUS_TRANSITIONS = Counter(
    "ackflow_status_transitions", "Status changes this process recorded, by the status moved to.", ["status"]
)
WEBHOOK_ATTEMPTS = Counter(
    "ackflow_webhook_attempts",
    "Webhook attempts by outcome (delivered, rejected, timeout, error, refused).",
    ["outcome"],
)
WEBHOOK_ATTEMPT_DURATION = Histogram(
    "ackflow_webhook_attempt_duration_seconds", "Time of one webhook attempt, start to answer.", buckets=WEBHOOK_BUCKETS
)

# every role
DEPENDENCY_UP = Gauge(
    "ackflow_dependency_up", "1 if the dependency answered this role's last check, else 0.", ["dependency"]
)
BUILD_INFO = Gauge("ackflow_build_info", "Always 1; the ackflow version as a label.", ["version"])


def ackflow_version() -> str:
    """The installed ackflow's version ("unknown" when run from a source tree that was never installed)."""
    try:
        return metadata.version("ackflow")
    except metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO.labels(version=ackflow_version()).set(1)
for _transport in TRANSPORTS:  # present at 0 from the start, so a dashboard never shows "no data"
    STREAMS_OPEN.labels(transport=_transport)
