"""Workflow kinds: a kind whose work is the user's own Temporal workflow, with steps, durable waits for
outside input, and progress.

    from datetime import timedelta
    from temporalio import activity, workflow

    with workflow.unsafe.imports_passed_through():
        from ackflow import progress, wait_for_input, workflow_kind

    @activity.defn
    async def resize(image: dict) -> dict:
        await progress(0.5, "resizing")
        ...

    @workflow_kind("thumbnail-pipeline", activities=[fetch, resize, publish], timeout=86400)
    class ThumbnailPipeline:
        @workflow.run
        async def run(self, payload: dict) -> dict:
            image = await workflow.execute_activity(fetch, payload, start_to_close_timeout=timedelta(minutes=1))
            ...
            approval = await wait_for_input("approval", timeout=timedelta(days=1))
            ...

Once the request is PROCESSING, ackflow starts the workflow with the request's payload as its one
argument: workflow id `work-<request id>`, a child of the request's batch workflow, on ackflow's task
queue. What it returns is the request's result (DONE); its failure is the request's error (FAILED);
cancelling the request cancels it (CANCELLED); `timeout` bounds its whole run. A worker that dies
mid-way loses nothing: Temporal resumes the run where it was, on another worker.

`@workflow_kind` applies `@workflow.defn` (named as the class unless `name=` says otherwise), so do
not decorate the class with it too. Temporal's determinism rules and sandbox apply to the workflow
as Temporal documents them; import ackflow (like any module with I/O) through
`workflow.unsafe.imports_passed_through()`. Call `progress()` from its activities, not from the
workflow itself.

`wait_for_input(name)` marks the request waiting (its state's `waiting`, a `request.waiting` event)
until a client delivers the value with `POST /v1/requests/{id}/input` (or a capability link for
that input alone); then a `request.input_received` event, and the workflow goes on with the value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from ackflow.contracts import INPUT_SIGNAL, HandlerOptions, MarkWaitingInput, request_of_work
from ackflow.errors import ConfigurationError
from ackflow.handlers import checked_options, registry

WorkflowClass = TypeVar("WorkflowClass", bound=type)

_BOOKKEEPING_TIMEOUT = timedelta(seconds=30)
_BOOKKEEPING_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))


def workflow_kind(
    kind: str,
    *,
    activities: Iterable[Callable[..., Any]] = (),
    timeout: float = 3600.0,
    name: str | None = None,
    concurrency_limit: int | None = None,
) -> Callable[[WorkflowClass], WorkflowClass]:
    """Register the decorated class as the Temporal workflow of `kind`, with the `activities` it runs.

    `timeout` (seconds) bounds one run, waits included; `name` is its Temporal workflow type (the
    class name by default), as the Temporal UI shows it; `concurrency_limit` as for `handler`.
    """

    def register(cls: WorkflowClass) -> WorkflowClass:
        workflow_type = name or cls.__name__
        try:
            defined = workflow.defn(name=workflow_type)(cls)
        except ValueError as exc:
            raise ConfigurationError(
                f"workflow kind {kind!r}: {exc}; use @workflow_kind in place of @workflow.defn (it applies it)"
            ) from None
        if workflow.unsafe.in_sandbox():
            return defined  # the sandbox imports the module afresh for each run: registered once, outside
        options = checked_options(
            kind,
            HandlerOptions(start_to_close_seconds=timeout, workflow=workflow_type, concurrency_limit=concurrency_limit),
        )
        registry.add_workflow(kind, defined, tuple(activities), options)
        return defined

    return register


class _Inbox:
    """The inputs delivered to one run, by name, until a wait takes them; a re-sent signal (same `seq`) is dropped."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self._seen: set[int] = set()
        self.waits = 0  # the run's waits so far: deterministic, so a replay numbers them alike

    def receive(self, message: dict[str, Any]) -> None:
        seq = int(message.get("seq", 0))
        if seq in self._seen:
            return
        self._seen.add(seq)
        self.values[str(message["name"])] = message.get("value")


async def wait_for_input(name: str, *, timeout: timedelta | None = None) -> Any:
    """Wait, durably, for the outside input `name` (a JSON value) and return it. With `timeout`, give
    up after it: ApplicationError type InputTimeout, which fails the request unless the workflow
    catches it."""
    request_id = request_of_work(workflow.info().workflow_id)
    if request_id is None:
        raise RuntimeError("wait_for_input() waits in a workflow kind's run, which ackflow starts for a request")
    inbox = _inbox()
    inbox.waits += 1
    wait = inbox.waits
    await _mark_waiting(request_id, name, wait)
    try:
        await workflow.wait_condition(lambda: name in inbox.values, timeout=timeout)
    except TimeoutError:
        await _mark_waiting(request_id, None, wait)
        raise ApplicationError(f"no {name!r} input arrived within {timeout}", type="InputTimeout") from None
    return inbox.values.pop(name)


def _inbox() -> _Inbox:
    """This run's inbox; the first call sets the signal handler (signals that came before it wait for it)."""
    instance = workflow.instance()
    inbox: _Inbox | None = getattr(instance, "_ackflow_inbox", None)
    if inbox is None:
        inbox = _Inbox()
        instance._ackflow_inbox = inbox
        workflow.set_signal_handler(INPUT_SIGNAL, inbox.receive)
    return inbox


async def _mark_waiting(request_id: str, name: str | None, wait: int) -> None:
    await workflow.execute_local_activity(
        "mark_waiting",
        MarkWaitingInput(request_id, name, wait),
        start_to_close_timeout=_BOOKKEEPING_TIMEOUT,
        retry_policy=_BOOKKEEPING_RETRY,
    )
