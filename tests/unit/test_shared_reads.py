"""Streams woken by the same event share one Postgres read, and never one sent before they asked."""

from __future__ import annotations

import asyncio

from gateway.streams import SharedReads


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

    first = [asyncio.create_task(reads.share("key", read)) for _ in range(1000)]
    await asyncio.sleep(0.01)  # the read is out now (and waiting on `release`)
    late = asyncio.create_task(reads.share("key", read))
    await asyncio.sleep(0.01)
    release.set()
    assert set(await asyncio.gather(*first)) == {1}
    assert await late == 2, "a caller that came after the read went out must not take its (possibly stale) rows"


async def test_a_caller_going_away_does_not_cancel_the_read_for_the_others() -> None:
    reads: SharedReads[str] = SharedReads()

    async def read() -> str:
        await asyncio.sleep(0.01)
        return "rows"

    leaving = asyncio.create_task(reads.share("key", read))
    staying = asyncio.create_task(reads.share("key", read))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await staying == "rows"
