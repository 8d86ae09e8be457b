"""Prometheus metrics for every role: the catalogue (catalogue.py), what runs at scrape time
(scrape.py), the stage gauges read from Postgres (stages.py), and /metrics on its own
port (serve.py, imported on its own: it loads uvicorn).

Where each role serves them is in README "Metrics"; the names, types and labels are in catalogue.py.
"""

from ackflow.metrics.catalogue import (
    ACCEPT_DURATION,
    ACCEPTS,
    DEPENDENCY_UP,
    HANDLER_DURATION,
    OUTBOX_DEAD_LETTERED,
    RELAY_DISPATCH_ERRORS,
    RELAY_LAG,
    STATUS_TRANSITIONS,
    STREAMS_OPEN,
    UNAUTHENTICATED,
    UNKNOWN_KIND,
    WEBHOOK_ATTEMPT_DURATION,
    WEBHOOK_ATTEMPTS,
)
from ackflow.metrics.scrape import CONTENT_TYPE, REFRESH, Refresher, dependency_check, exposition, token_matches

__all__ = [
    "ACCEPTS",
    "ACCEPT_DURATION",
    "CONTENT_TYPE",
    "DEPENDENCY_UP",
    "HANDLER_DURATION",
    "OUTBOX_DEAD_LETTERED",
    "REFRESH",
    "RELAY_DISPATCH_ERRORS",
    "RELAY_LAG",
    "STATUS_TRANSITIONS",
    "STREAMS_OPEN",
    "UNAUTHENTICATED",
    "UNKNOWN_KIND",
    "WEBHOOK_ATTEMPTS",
    "WEBHOOK_ATTEMPT_DURATION",
    "Refresher",
    "dependency_check",
    "exposition",
    "token_matches",
]
