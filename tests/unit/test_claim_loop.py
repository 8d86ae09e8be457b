"""The shared claim loop: Postgres trouble is waited out with backoff, anything else ends the loop."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from ackflow.claim_loop import ClaimLoop
from ackflow.db.pool import POSTGRES_ERRORS


def loop() -> ClaimLoop:
    return ClaimLoop("test", "postgresql://unused", "unused", poll_seconds=0.01, listen=False)


@pytest.mark.parametrize(
    "trouble",
    [
        ConnectionRefusedError(111, "refused"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
    ],
)
async def test_postgres_trouble_in_a_step_is_waited_out_and_the_loop_goes_on(trouble: Exception) -> None:
    assert isinstance(trouble, POSTGRES_ERRORS)
    stop, calls = asyncio.Event(), 0

    async def step() -> bool:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise trouble
        stop.set()
        return False

    await asyncio.wait_for(loop().run(stop, step), 5)
    assert calls == 3


async def test_a_step_that_finds_a_full_claim_runs_again_at_once() -> None:
    stop, calls = asyncio.Event(), 0

    async def step() -> bool:
        nonlocal calls
        calls += 1
        if calls == 50:
            stop.set()
        return True  # so it never waits for the (one-minute) poll interval

    slow_poll = ClaimLoop("test", "postgresql://unused", "unused", poll_seconds=60, listen=False)
    await asyncio.wait_for(slow_poll.run(stop, step), 10)
    assert calls == 50


async def test_a_bug_in_a_step_ends_the_loop() -> None:
    async def step() -> bool:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        await asyncio.wait_for(loop().run(asyncio.Event(), step), 5)


def test_backoff_doubles_up_to_eight_poll_intervals() -> None:
    claim_loop = ClaimLoop("test", "postgresql://unused", "unused", poll_seconds=1.0, listen=False)
    assert [claim_loop._backoff(n) for n in range(6)] == [1.0, 1.0, 2.0, 4.0, 8.0, 8.0]
