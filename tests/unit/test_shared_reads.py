"""Streams woken by the same event share one Postgres read, and never one sent before they asked."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.shared_reads import SharedReads
from tests.helpers import assert_eventually


async def test_callers_that_ask_before_the_read_goes_out_share_it_and_later_ones_send_their_own() -> None:
    reads: SharedReads[int] = SharedReads()
    sent = 0
    release = asyncio.Event()

    async def read() -> int:
        nonlocal sent
        sent += 1
        mine = sent
        await release.wait()
        return mine

    async def reads_sent(count: int) -> bool:
        return sent == count

    first = [asyncio.create_task(reads.share("key", read)) for _ in range(1000)]
    await assert_eventually(lambda: reads_sent(1), message="the first read never went out")
    late = asyncio.create_task(reads.share("key", read))
    await assert_eventually(lambda: reads_sent(2), message="a caller after the read went out did not send its own")
    release.set()
    assert set(await asyncio.gather(*first)) == {1}
    assert await late == 2, "a caller that came after the read went out must not take its (possibly stale) rows"


async def test_a_caller_going_away_does_not_cancel_the_read_for_the_others() -> None:
    reads: SharedReads[str] = SharedReads()
    out, release = asyncio.Event(), asyncio.Event()

    async def read() -> str:
        out.set()
        await release.wait()
        return "rows"

    leaving = asyncio.create_task(reads.share("key", read))
    staying = asyncio.create_task(reads.share("key", read))
    await asyncio.wait_for(out.wait(), timeout=5)  # both asked before it went out: they share it
    leaving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await leaving
    release.set()
    assert leaving.cancelled()
    assert await staying == "rows"
