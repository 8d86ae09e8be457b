"""One typed `Settings` object, read from environment variables and nothing else.

Every role (`gateway`, `relay`, `worker`, `migrate`) builds it once with `Settings.from_env()` and
passes it down; nothing reads the environment elsewhere. A malformed value is a
`ConfigurationError` naming the variable and the fix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from ackflow.contracts import DEFAULT_TASK_QUEUE, WEBHOOK_RETRY_SCHEDULE_SECONDS
from ackflow.errors import ConfigurationError

T = TypeVar("T")

# A batch's request ids go into one search attribute (AckflowRequestIds), whose value Temporal bounds
# (2 KiB by default: about 50 ids).
MAX_BATCH = 50
MAX_RETENTION_DAYS = 100_000  # far beyond any need, and well inside Postgres' interval range


@dataclass(frozen=True)
class Settings:
    """Configuration for every ackflow role. Field `x_y` is read from `ENV[x_y]` (see `_ENV`)."""

    # URLs may carry passwords: kept out of repr so they never reach a log.
    database_url: str = field(default="", repr=False)
    redis_url: str = field(default="", repr=False)
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = DEFAULT_TASK_QUEUE
    handler_modules: tuple[str, ...] = ()
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    max_body_bytes: int = 1024 * 1024
    max_json_depth: int = 32
    cors_origins: tuple[str, ...] = ()
    retry_after_seconds: int = 1
    relay_batch_size: int = 100
    batch_max: int = 50
    relay_poll_seconds: float = 1.0
    relay_max_in_flight: int = 200
    relay_lease_seconds: float = 30.0
    outbox_max_attempts: int = 500
    outbox_max_failing_seconds: float = 6 * 3600.0
    reconcile_seconds: float = 60.0
    outbox_notify: bool = True
    auth_cache_seconds: float = 2.0
    capability_ttl_seconds: int = 24 * 3600
    idempotency_ttl_seconds: int = 24 * 3600
    stream_keepalive_seconds: float = 15.0
    stream_poll_seconds: float = 2.0
    rate_limit_per_second: int = 1000
    max_streams_per_tenant: int = 5000
    ws_max_message_bytes: int = 4096
    webhook_allow_private: bool = False
    webhook_disable_after_days: float = 5.0
    webhook_max_in_flight: int = 200
    webhook_retry_schedule: tuple[float, ...] = WEBHOOK_RETRY_SCHEDULE_SECONDS
    webhook_lease_seconds: float = 60.0
    db_pool_size: int = 10
    connect_timeout_seconds: float = 10.0
    log_level: str = "INFO"
    log_format: str = ""  # json | text; empty: the command's default (json for the roles, text for people)
    temporal_ui_url: str = "http://localhost:8233"  # where `ackflow requests show` links a workflow
    # Retention (ackflow/db/retention.py): how long finished work is kept, and how the relay prunes.
    retain_requests_days: float = 30.0
    retain_deliveries_days: float = 30.0
    retain_endpoint_events_days: float = 90.0
    retain_deleted_endpoints_days: float = 30.0
    prune_interval_seconds: float = 300.0
    prune_batch_size: int = 500
    # Metrics (ackflow/metrics): a role's own /metrics port (None: the gateway serves it on its HTTP
    # port, relay and worker not at all); the bearer token that guards it, kept out of repr and logs.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_token: str = field(default="", repr=False)
    # Progress (ackflow/progress_reports.py): at most one report written per request per interval; the bytes a
    # report's partial result may take.
    progress_interval_seconds: float = 0.25
    max_partial_bytes: int = 64 * 1024
    # Inputs to waiting workflow kinds: how long a capability link to deliver one works, how large one may be.
    input_link_ttl_seconds: int = 7 * 24 * 3600
    max_input_bytes: int = 64 * 1024
    # Priority (migration 0020): how many seconds of waiting one priority level is worth, so a request
    # waits at most four of these behind fresher work of a higher priority.
    priority_aging_seconds: float = 60.0
    # The most requests a tenant may have waiting to start (INIT); beyond it accepts answer 429.
    max_waiting_per_tenant: int = 100_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from `environ` (default: the process environment)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (variable, parse) in _ENV.items():
            raw = env.get(variable)
            if raw is not None and raw.strip() != "":
                values[name] = _parse(variable, raw.strip(), parse)
        return replace(cls(**values), **overrides)

    def require(self, *names: str) -> Settings:
        """Fail with one clear line if a setting a role cannot run without is empty."""
        for name in names:
            if not getattr(self, name):
                variable = _ENV[name][0]
                raise ConfigurationError(f"{variable} is not set: export {variable}=... ({_HINTS[name]})")
        return self


def _parse(variable: str, raw: str, parse: Callable[[str], Any]) -> Any:
    try:
        value = parse(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{variable}={raw!r} is not valid: {exc}") from None
    if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
        raise ConfigurationError(f"{variable}={raw!r} is not valid: it must be greater than zero")
    return value


def _at_most(value: int, limit: int) -> int:
    if value > limit:
        raise ValueError(f"expected at most {limit}")
    return value


def _one_of(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}")
    return value


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _seconds_list(raw: str) -> tuple[float, ...]:
    values = tuple(float(part) for part in raw.split(",") if part.strip())
    if not values or any(value <= 0 for value in values):
        raise ValueError("expected comma-separated positive seconds, such as 5,300,1800")
    return values


def _days(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value) or value > MAX_RETENTION_DAYS:
        raise ValueError(f"expected days up to {MAX_RETENTION_DAYS}, such as 30 (36500 keeps rows a century)")
    return value


def _module_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not raw.startswith(tuple(f"{scheme}://" for scheme in schemes)):
            raise ValueError(f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return raw

    return parse


_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "database_url": ("DATABASE_URL", _url("postgresql", "postgres")),
    "redis_url": ("REDIS_URL", _url("redis", "rediss", "unix")),
    "temporal_address": ("TEMPORAL_ADDRESS", str),
    "temporal_namespace": ("TEMPORAL_NAMESPACE", str),
    "task_queue": ("ACKFLOW_TASK_QUEUE", str),
    "handler_modules": ("ACKFLOW_HANDLERS", _module_list),
    "http_host": ("ACKFLOW_HOST", str),
    "http_port": ("ACKFLOW_PORT", int),
    "max_body_bytes": ("ACKFLOW_MAX_BODY_BYTES", int),
    "max_json_depth": ("ACKFLOW_MAX_JSON_DEPTH", int),
    "cors_origins": ("ACKFLOW_CORS_ORIGINS", _module_list),
    "retry_after_seconds": ("ACKFLOW_RETRY_AFTER_SECONDS", int),
    "relay_batch_size": ("ACKFLOW_RELAY_BATCH_SIZE", int),
    "batch_max": ("ACKFLOW_BATCH_MAX", lambda raw: _at_most(int(raw), MAX_BATCH)),
    "relay_poll_seconds": ("ACKFLOW_RELAY_POLL_SECONDS", float),
    "relay_max_in_flight": ("ACKFLOW_RELAY_MAX_IN_FLIGHT", int),
    "relay_lease_seconds": ("ACKFLOW_RELAY_LEASE_SECONDS", float),
    "outbox_max_attempts": ("ACKFLOW_OUTBOX_MAX_ATTEMPTS", int),
    "outbox_max_failing_seconds": ("ACKFLOW_OUTBOX_MAX_FAILING_SECONDS", float),
    "reconcile_seconds": ("ACKFLOW_RECONCILE_SECONDS", float),
    "outbox_notify": ("ACKFLOW_OUTBOX_NOTIFY", _bool),
    "auth_cache_seconds": ("ACKFLOW_AUTH_CACHE_SECONDS", float),
    "capability_ttl_seconds": ("ACKFLOW_CAPABILITY_TTL_SECONDS", int),
    "idempotency_ttl_seconds": ("ACKFLOW_IDEMPOTENCY_TTL_SECONDS", int),
    "stream_keepalive_seconds": ("ACKFLOW_STREAM_KEEPALIVE_SECONDS", float),
    "stream_poll_seconds": ("ACKFLOW_STREAM_POLL_SECONDS", float),
    "rate_limit_per_second": ("ACKFLOW_RATE_LIMIT_PER_SECOND", int),
    "max_streams_per_tenant": ("ACKFLOW_MAX_STREAMS_PER_TENANT", int),
    "ws_max_message_bytes": ("ACKFLOW_WS_MAX_MESSAGE_BYTES", int),
    "priority_aging_seconds": ("ACKFLOW_PRIORITY_AGING_SECONDS", float),
    "max_waiting_per_tenant": ("ACKFLOW_MAX_WAITING_PER_TENANT", int),
    "webhook_allow_private": ("ACKFLOW_WEBHOOK_ALLOW_PRIVATE", _bool),
    "webhook_disable_after_days": ("ACKFLOW_WEBHOOK_DISABLE_AFTER_DAYS", float),
    "webhook_max_in_flight": ("ACKFLOW_WEBHOOK_MAX_IN_FLIGHT", int),
    "webhook_retry_schedule": ("ACKFLOW_WEBHOOK_RETRY_SCHEDULE", _seconds_list),
    "webhook_lease_seconds": ("ACKFLOW_WEBHOOK_LEASE_SECONDS", float),
    "db_pool_size": ("ACKFLOW_DB_POOL_SIZE", int),
    "connect_timeout_seconds": ("ACKFLOW_CONNECT_TIMEOUT_SECONDS", float),
    "log_level": ("ACKFLOW_LOG_LEVEL", str.upper),
    "log_format": ("ACKFLOW_LOG_FORMAT", lambda raw: _one_of(raw.lower(), ("json", "text"))),
    "temporal_ui_url": ("ACKFLOW_TEMPORAL_UI_URL", lambda raw: _url("http", "https")(raw).rstrip("/")),
    "retain_requests_days": ("ACKFLOW_RETAIN_REQUESTS_DAYS", _days),
    "retain_deliveries_days": ("ACKFLOW_RETAIN_DELIVERIES_DAYS", _days),
    "retain_endpoint_events_days": ("ACKFLOW_RETAIN_ENDPOINT_EVENTS_DAYS", _days),
    "retain_deleted_endpoints_days": ("ACKFLOW_RETAIN_DELETED_ENDPOINTS_DAYS", _days),
    "prune_interval_seconds": ("ACKFLOW_PRUNE_INTERVAL_SECONDS", float),
    "prune_batch_size": ("ACKFLOW_PRUNE_BATCH_SIZE", int),
    "metrics_port": ("ACKFLOW_METRICS_PORT", lambda raw: _at_most(int(raw), 65535)),
    "metrics_host": ("ACKFLOW_METRICS_HOST", str),
    "metrics_token": ("ACKFLOW_METRICS_TOKEN", str),
    "progress_interval_seconds": ("ACKFLOW_PROGRESS_INTERVAL_SECONDS", float),
    "max_partial_bytes": ("ACKFLOW_MAX_PARTIAL_BYTES", int),
    "input_link_ttl_seconds": ("ACKFLOW_INPUT_LINK_TTL_SECONDS", int),
    "max_input_bytes": ("ACKFLOW_MAX_INPUT_BYTES", int),
}

_HINTS = {
    "database_url": "a Postgres URL such as postgresql://user:pass@localhost:5432/ackflow",
    "redis_url": "a Redis URL such as redis://localhost:6379/0",
    "temporal_address": "host:port of the Temporal frontend, such as localhost:7233",
    "handler_modules": "comma-separated modules that define @handler functions, such as activities.examples",
}

assert set(_ENV) == {f.name for f in fields(Settings)}, "every setting needs an environment variable"
