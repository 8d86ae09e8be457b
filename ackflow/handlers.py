"""Handlers: the user's own work, one async function per request kind.

    from ackflow import handler, PermanentError

    @handler("resize", timeout=120, max_attempts=3)
    async def resize(payload: dict) -> dict:
        ...
        return {"url": url}

A handler receives the request's payload and returns a JSON-serialisable result. It may run more
than once (Temporal retries it by its policy), so it should be idempotent; its result is recorded
once. Raise `PermanentError` for a failure no retry can fix: the request ends FAILED at once with
the message recorded. Any other exception is retried until `max_attempts`, then FAILED. A long
handler calls `heartbeat()` now and then: that is how it learns it was cancelled (the await raises
`asyncio.CancelledError`), and how a crashed worker is noticed before the timeout.

Workers load handler modules named by `ACKFLOW_HANDLERS`; importing a module registers its handlers.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ackflow.contracts import MAX_CONCURRENCY_LIMIT, HandlerOptions
from ackflow.errors import ConfigurationError

HandlerFunction = Callable[[Any], Awaitable[Any]]
KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


class PermanentError(Exception):
    """Raised by a handler for a failure that retrying cannot fix; the request ends FAILED."""


@dataclass(frozen=True)
class Handler:
    """A kind's work: its handler `function`, or (a workflow kind, ackflow/workflow_kinds.py) the
    `workflow` class ackflow starts for each request and the `activities` it runs."""

    kind: str
    function: HandlerFunction | None
    options: HandlerOptions
    workflow: type | None = None
    activities: tuple[Callable[..., Any], ...] = ()


class HandlerRegistry:
    """Kinds and the functions that handle them."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def add(self, kind: str, function: HandlerFunction, options: HandlerOptions) -> None:
        self._add(Handler(kind, function, options))

    def add_workflow(
        self, kind: str, workflow: type, activities: tuple[Callable[..., Any], ...], options: HandlerOptions
    ) -> None:
        self._add(Handler(kind, None, options, workflow, activities))

    def _add(self, handler: Handler) -> None:
        if not KIND_PATTERN.match(handler.kind):
            raise ConfigurationError(
                f"handler kind {handler.kind!r} is not valid: use 1-64 of a-z 0-9 _ . - starting with a letter"
            )
        existing = self._handlers.get(handler.kind)
        if existing is not None and (existing.function, existing.workflow) != (handler.function, handler.workflow):
            raise ConfigurationError(
                f"handler kind {handler.kind!r} is registered twice; give each handler its own kind"
            )
        self._handlers[handler.kind] = handler

    def get(self, kind: str) -> Handler | None:
        return self._handlers.get(kind)

    def kinds(self) -> list[str]:
        return sorted(self._handlers)

    def handlers(self) -> list[Handler]:
        return [self._handlers[kind] for kind in self.kinds()]

    def workflow_kinds(self) -> list[Handler]:
        return [handler for handler in self.handlers() if handler.workflow is not None]


registry = HandlerRegistry()


def handler(
    kind: str,
    *,
    timeout: float = 300.0,
    heartbeat_timeout: float | None = None,
    max_attempts: int = 5,
    initial_retry: float = 1.0,
    max_retry: float = 60.0,
    concurrency_limit: int | None = None,
) -> Callable[[HandlerFunction], HandlerFunction]:
    """Register the decorated async function as the handler of `kind`.

    `timeout` bounds one attempt; `heartbeat_timeout`, if set, fails an attempt whose handler stopped
    calling `heartbeat()`; retries back off from `initial_retry` to `max_retry` seconds.
    `concurrency_limit`: how many requests with the same `concurrency_key` run at once when the
    request does not say (default one).
    """
    options = checked_options(
        kind,
        HandlerOptions(
            start_to_close_seconds=timeout,
            heartbeat_seconds=heartbeat_timeout,
            max_attempts=max_attempts,
            initial_retry_seconds=initial_retry,
            max_retry_seconds=max_retry,
            concurrency_limit=concurrency_limit,
        ),
    )

    def register(function: HandlerFunction) -> HandlerFunction:
        registry.add(kind, function, options)
        return function

    return register


def checked_options(kind: str, options: HandlerOptions) -> HandlerOptions:
    """The options, if they make sense; a ConfigurationError naming the kind if not."""
    heartbeat_timeout = options.heartbeat_seconds
    if options.start_to_close_seconds <= 0 or (heartbeat_timeout is not None and heartbeat_timeout <= 0):
        raise ConfigurationError(f"handler {kind!r}: timeout and heartbeat_timeout must be greater than zero")
    if options.max_attempts < 1:
        raise ConfigurationError(f"handler {kind!r}: max_attempts must be at least 1")
    if not 0 < options.initial_retry_seconds <= options.max_retry_seconds:
        raise ConfigurationError(
            f"handler {kind!r}: retries need 0 < initial_retry ({options.initial_retry_seconds})"
            f" <= max_retry ({options.max_retry_seconds})"
        )
    limit = options.concurrency_limit
    if limit is not None and not 1 <= limit <= MAX_CONCURRENCY_LIMIT:
        raise ConfigurationError(f"handler {kind!r}: concurrency_limit must be 1..{MAX_CONCURRENCY_LIMIT}")
    return options


def heartbeat(*details: Any) -> None:
    """Tell Temporal the handler is alive (and let a cancellation reach it)."""
    from temporalio import activity

    activity.heartbeat(*details)


def load_handler_modules(modules: Iterable[str]) -> HandlerRegistry:
    """Import each module so its @handler functions register; a missing module is a clear error."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            raise ConfigurationError(
                f"ACKFLOW_HANDLERS names module {name!r}, which cannot be imported ({exc}); "
                "fix the module path or install the package that provides it"
            ) from None
    return registry
