"""Small asyncio helpers shared by the long-running loops."""

from __future__ import annotations

import asyncio


async def wait_for_wake(wake: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
    """Sleep until `wake` or `stop` is set, or `timeout` seconds pass; then clear `wake`."""
    stopping = asyncio.create_task(stop.wait())
    woken = asyncio.create_task(wake.wait())
    try:
        await asyncio.wait({stopping, woken}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        woken.cancel()
        wake.clear()
