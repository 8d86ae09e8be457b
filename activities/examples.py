"""Example handlers, enabled by `ackflow dev`: `echo`, `sleep` and `fail`.

Load them in a worker with `ACKFLOW_HANDLERS=activities.examples`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ackflow.handlers import PermanentError, handler, heartbeat


@handler("echo", timeout=30)
async def echo(payload: Any) -> Any:
    """Return the payload unchanged."""
    return payload


@handler("sleep", timeout=3600, heartbeat_timeout=5)
async def sleep(payload: Any) -> dict[str, float]:
    """Sleep `payload["seconds"]` (default 1), heartbeating each second so a cancel stops it at once."""
    seconds = float(payload.get("seconds", 1)) if isinstance(payload, dict) else 1.0
    if not 0 <= seconds <= 3600:
        raise PermanentError("seconds must be between 0 and 3600")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        heartbeat({"left": left})
        await asyncio.sleep(min(1.0, left))
    return {"slept": seconds}


@handler("fail", timeout=30)
async def fail(payload: Any) -> None:
    """Fail at once, without retries, with `payload["message"]`."""
    message = payload.get("message", "failed on purpose") if isinstance(payload, dict) else "failed on purpose"
    raise PermanentError(str(message))
