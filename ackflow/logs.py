"""Logging for every ackflow command: one JSON object a line (production roles) or text (people).

`configure_logging` replaces the root handler once per process. Both formats carry the same
context: `log_context(request_id=..., tenant=...)` binds fields for the work of one request (a
contextvar, so concurrent tasks keep their own), and the current OpenTelemetry span, when one is
recording, adds `trace_id` — read through opentelemetry-api only, so with no tracer configured
there is simply no `trace_id`.

No secret reaches a log line: API keys (`ak_<prefix>_<secret>`), webhook secrets (`whsec_...`)
and the user:password of URLs are masked in the message and in exception text, whatever logged
them. The code already keeps secrets out of what it logs; this is the net under it.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ackflow.settings import Settings

LOG_FORMATS = ("json", "text")
CONTEXT_FIELDS = ("request_id", "request_ids", "tenant", "kind", "delivery_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_context: ContextVar[Mapping[str, Any]] = ContextVar("ackflow_log_context", default={})  # noqa: B039 (never mutated)

# What a secret looks like wherever it is printed: replaced by its harmless head.
_SECRETS = (
    (re.compile(r"\b(ak_[0-9a-f]{8}_)[A-Za-z0-9_\-]+"), r"\1…"),  # an API key keeps its public prefix
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]+"), "whsec_…"),
    (re.compile(r"\b([a-z][a-z0-9+.\-]*://)[^/\s:@]*:[^/\s@]*@", re.IGNORECASE), r"\1…@"),  # user:password@
)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` (None values skipped) to every log record emitted inside the block, in this task."""
    given = {name: _plain(value) for name, value in fields.items() if value is not None}
    token = _context.set({**_context.get(), **given})
    try:
        yield
    finally:
        _context.reset(token)


def bind_log_context(**fields: Any) -> None:
    """Add `fields` for the rest of the current asyncio task (a request's HTTP cycle, one activity):
    each runs in a task of its own, whose context copy dies with it, so nothing leaks to the next."""
    _context.set({**_context.get(), **{name: _plain(value) for name, value in fields.items() if value is not None}})


def current_context() -> Mapping[str, Any]:
    """The fields bound by the enclosing `log_context` blocks."""
    return _context.get()


def redact(text: str) -> str:
    """`text` with API keys, webhook secrets and URL passwords masked."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def configure_logging(settings: Settings, *, default_format: str, stream: TextIO | None = None) -> None:
    """Send every record to `stream` (stderr), at ACKFLOW_LOG_LEVEL, as ACKFLOW_LOG_FORMAT (else `default_format`)."""
    chosen = settings.log_format or default_format
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_json_formatter() if chosen == "json" else _TextFormatter(TEXT_FORMAT))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)


class ContextFilter(logging.Filter):
    """Copy the bound context and the current trace id onto each record (as attributes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        trace_id = current_trace_id()
        if trace_id is not None and not hasattr(record, "trace_id"):
            record.trace_id = trace_id
        return True


def current_trace_id() -> str | None:
    """The current span's trace id as 32 hex characters, or None outside a valid span (or without OTel)."""
    try:
        from opentelemetry import trace
    except ModuleNotFoundError:  # the base install (the client) may log without OpenTelemetry
        return None
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def _json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    class _Json(JsonFormatter):
        """The fields in a fixed order: time (UTC, Z), level, logger, message, then the context."""

        def add_fields(
            self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
        ) -> None:
            log_record["time"] = _utc(record.created)
            log_record["level"] = record.levelname
            log_record["logger"] = record.name
            log_record["message"] = redact(record.getMessage())
            for name in (*CONTEXT_FIELDS, "trace_id"):
                if hasattr(record, name):
                    log_record[name] = getattr(record, name)
            if record.exc_info:
                log_record["exc_info"] = redact(logging.Formatter.formatException(self, record.exc_info))
            if record.stack_info:
                log_record["stack_info"] = redact(logging.Formatter.formatStack(self, record.stack_info))

    return _Json()


class _TextFormatter(logging.Formatter):
    """The classic one-line text, with the context appended (`request_id=...`) and secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = " ".join(
            f"{name}={getattr(record, name)}" for name in (*CONTEXT_FIELDS, "trace_id") if hasattr(record, name)
        )
        if extra:
            first, newline, rest = text.partition("\n")
            text = f"{first} [{extra}]{newline}{rest}"
        return redact(text)


def _utc(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    """A JSON-friendly value: ids (UUIDs) as text, lists of them as lists of text."""
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value if isinstance(value, str | int | float | bool) else str(value)
