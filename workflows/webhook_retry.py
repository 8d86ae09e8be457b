"""WebhookRetryWorkflow: attempts 2 to 8 of a failed delivery, on Svix's schedule, as durable timers.

Each wait is counted from the previous attempt, with ±20 % jitter so a receiver that was down is
not hit by every retry at the same instant; a receiver's Retry-After (429/503) replaces the wait,
within bounds. The timers live in Temporal, so the schedule survives any restart, and a resend
(`attempt_now` signal, sent by a dispatcher for POST /v1/deliveries/{id}/retry) cuts the current
wait short. The attempts themselves are an activity.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from ackflow.contracts import (
        WEBHOOK_ATTEMPT_NOW_SIGNAL,
        WEBHOOK_RETRY_AFTER_BOUNDS_SECONDS,
        WEBHOOK_RETRY_JITTER,
        WEBHOOK_RETRY_SCHEDULE_SECONDS,
        WEBHOOK_RETRY_WORKFLOW,
        DeliveryState,
        WebhookAttemptInput,
        WebhookAttemptOutput,
        WebhookRetryInput,
    )

ATTEMPT_TIMEOUT = timedelta(seconds=60)
# Only infrastructure trouble (Postgres down, worker lost) or an endpoint with no send slot free for a
# while (callbacks.limits.EndpointBusy) makes the activity itself fail: retry it.
ATTEMPT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))


# Unsandboxed, like ProcessRequestWorkflow. On Python < 3.12 the sandbox's thread-local swap of
# sys.modules races with imports made by other threads at the same moment (temporalio skips a test
# of its own for it: sdk-python#585, #1195), and this worker process also runs the webhook
# dispatcher and the other roles' libraries. It surfaced once as "Failed validating workflow
# WebhookRetryWorkflow" when a test started a worker while another one's workflows ran. Its tests
# (tests/workflows/test_webhook_retry_workflow.py) still run it in the sandbox, so a clock, random or
# I/O call here fails them, and replay its history.
@workflow.defn(name=WEBHOOK_RETRY_WORKFLOW, sandboxed=False)
class WebhookRetryWorkflow:
    """Retries one delivery until it succeeds, runs out of attempts, or its endpoint is disabled."""

    def __init__(self) -> None:
        self._attempt_now = False

    @workflow.signal(name=WEBHOOK_ATTEMPT_NOW_SIGNAL)
    def attempt_now(self) -> None:
        """Skip the rest of the current wait (a manual resend)."""
        self._attempt_now = True

    @workflow.run
    async def run(self, retry: WebhookRetryInput) -> str:
        attempts, retry_after = retry.attempts_done, retry.retry_after
        schedule = tuple(retry.schedule_seconds or WEBHOOK_RETRY_SCHEDULE_SECONDS)
        for _ in range(len(schedule)):
            await self._wait(retry_delay(schedule, attempts, retry_after, workflow.random().uniform(-1.0, 1.0)))
            outcome = await workflow.execute_activity(
                "attempt_webhook",
                WebhookAttemptInput(retry.delivery_id, workflow.now().isoformat()),
                result_type=WebhookAttemptOutput,
                start_to_close_timeout=ATTEMPT_TIMEOUT,
                retry_policy=ATTEMPT_RETRY,
            )
            if outcome.state != DeliveryState.RETRYING:
                return str(outcome.state)
            attempts, retry_after = outcome.attempt, outcome.retry_after
        return str(DeliveryState.FAILED)

    async def _wait(self, seconds: float) -> None:
        # The flag is cleared after the wait, not before: a resend signalled while an attempt was
        # under way, or with the start itself (signal-with-start), still cuts the next wait short.
        try:
            await workflow.wait_condition(lambda: self._attempt_now, timeout=timedelta(seconds=seconds))
        except TimeoutError:
            pass  # the normal case: the wait ran out
        self._attempt_now = False


def retry_delay(schedule: tuple[float, ...], attempts_done: int, retry_after: float | None, jitter: float) -> float:
    """Seconds to wait before the next attempt; `jitter` in [-1, 1] scales the ±20 % spread."""
    if retry_after is not None:
        low, high = WEBHOOK_RETRY_AFTER_BOUNDS_SECONDS
        return float(min(max(retry_after, low), high))
    index = min(max(attempts_done, 1), len(schedule)) - 1
    return float(schedule[index]) * (1 + WEBHOOK_RETRY_JITTER * jitter)
