"""ackflow: acknowledge-first request processing.

The public API for handler authors::

    from ackflow import handler, heartbeat, progress, PermanentError

and for workflow kinds (ackflow/workflow_kinds.py, needs the server extra's temporalio)::

    from ackflow import workflow_kind, wait_for_input

Everything else in this package is the shared core the services are built from (settings,
contracts, errors, database, CLI, development stack); see each module's docstring.
"""

from typing import Any

from ackflow.handlers import PermanentError, handler, heartbeat
from ackflow.progress_reports import ProgressError, progress

__all__ = ["PermanentError", "ProgressError", "handler", "heartbeat", "progress", "wait_for_input", "workflow_kind"]


def __getattr__(name: str) -> Any:
    """workflow_kind and wait_for_input, imported when first asked for: the client's base install has no temporalio."""
    if name in ("workflow_kind", "wait_for_input"):
        from ackflow import workflow_kinds

        return getattr(workflow_kinds, name)
    raise AttributeError(f"module 'ackflow' has no attribute {name!r}")
