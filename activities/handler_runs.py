"""One run of a user's handler inside a batch, and its timing (ackflow_handler_duration_seconds).

A run ends one of four ways, each an `outcome` label: done (a result), failed (an error that is not
retried), retry (an error its kind's policy retries), cancelled (its request ended meanwhile, or its
activity was cancelled). The kind label is a kind a worker registered, so the series stay few.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec
from temporalio.exceptions import ApplicationError

from ackflow.contracts import HandlerOptions
from ackflow.handlers import Handler, PermanentError
from ackflow.metrics import HANDLER_DURATION

Outcome = tuple[Any, dict[str, Any] | None, bool]  # (result, error or None, whether the error may be retried)


async def run_once(
    handler: Handler, options: HandlerOptions, payload: Any, check_result: Callable[[Any], None]
) -> Outcome:
    """Run the handler under its kind's timeout; its failure is an error to record, not an exception."""
    assert handler.function is not None, "a workflow kind has no handler function"
    timer = asyncio.timeout(options.start_to_close_seconds)
    try:
        async with timer:
            result = await handler.function(payload)
        check_result(result)
    except PermanentError as exc:
        return None, {"type": "PermanentError", "message": str(exc)}, False
    except ApplicationError as exc:
        return None, {"type": exc.type or "HandlerError", "message": exc.message}, not exc.non_retryable
    except TimeoutError as exc:
        if not timer.expired():
            return None, {"type": type(exc).__name__, "message": str(exc)}, True
        return None, {"type": "Timeout", "message": "handler timed out (START_TO_CLOSE)"}, True
    except Exception as exc:  # the handler's own failure: retried by its kind's policy
        return None, {"type": type(exc).__name__, "message": str(exc)}, True
    return result, None, True


def outcome_of(error: dict[str, Any] | None, retryable: bool, options: HandlerOptions) -> str:
    """The outcome label of a run that returned (a cancelled one raised)."""
    if error is None:
        return "done"
    return "retry" if retryable and options.max_attempts > 1 else "failed"


def handler_ran(kind: str, outcome: str, started: float) -> None:
    """Record a run of `kind` that began at `started` (time.perf_counter())."""
    HANDLER_DURATION.labels(kind=kind, outcome=outcome).observe(time.perf_counter() - started)


def check_result(result: Any, max_bytes: int) -> None:
    """A non-retryable ApplicationError unless the result is JSON within `max_bytes` (retrying returns the same)."""
    try:
        encoded = msgspec.json.encode(result)
    except (TypeError, msgspec.EncodeError) as exc:
        raise ApplicationError(
            f"handler result is not JSON-serialisable: {exc}", type="InvalidResult", non_retryable=True
        ) from None
    if len(encoded) > max_bytes:
        raise ApplicationError(
            f"handler result is {len(encoded)} bytes, over the {max_bytes}-byte limit",
            type="ResultTooLarge",
            non_retryable=True,
        )
