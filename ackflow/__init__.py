"""ackflow: acknowledge-first request processing.

The public API for handler authors::

    from ackflow import handler, heartbeat, PermanentError

Everything else in this package is the shared core the services are built from (settings,
contracts, errors, database, CLI, development stack); see each module's docstring.
"""

from ackflow.handlers import PermanentError, handler, heartbeat

__all__ = ["PermanentError", "handler", "heartbeat"]
