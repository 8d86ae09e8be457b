"""GroupCommit: concurrent submits are written together, each caller gets its own outcome."""

from __future__ import annotations

import asyncio

import pytest

from ackflow.group_commit import GroupCommit


class Writes:
    """A write that records each group it is given (and each it wrote) and answers each item with ten
    times it; while `gate` is clear it waits, so a test can submit more while a write is under way."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.groups: list[list[int]] = []
        self.written: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self._fail_first = fail_first

    async def __call__(self, items: list[int]) -> list[int]:
        self.groups.append(list(items))
        await self.gate.wait()
        if self._fail_first:
            self._fail_first -= 1
            raise ConnectionError("the database is briefly unreachable")
        self.written.append(list(items))
        return [item * 10 for item in items]


async def started(writes: Writes, groups: int) -> None:
    """Wait (a few loop turns at most) until the writer has taken `groups` groups."""
    for _ in range(100):
        if len(writes.groups) >= groups:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"the writer took {writes.groups}, not {groups} groups")


async def test_submits_made_together_are_written_in_one_write_each_with_its_own_outcome() -> None:
    writes = Writes()
    commit: GroupCommit[int, int] = GroupCommit(writes)
    assert await asyncio.gather(*(commit.submit(i) for i in range(10))) == [i * 10 for i in range(10)]
    assert writes.groups == [list(range(10))]


async def test_a_lone_submit_is_written_at_once_and_submits_during_its_write_go_in_the_next() -> None:
    writes = Writes()
    writes.gate.clear()
    commit: GroupCommit[int, int] = GroupCommit(writes)
    first = asyncio.create_task(commit.submit(1))
    await started(writes, 1)
    later = [asyncio.create_task(commit.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)  # one loop turn: the submits are in, and a writer that did not wait would take them now
    assert writes.groups == [[1]]  # the next write waits for the one under way
    writes.gate.set()
    assert await first == 10
    assert await asyncio.gather(*later) == [20, 30, 40]
    assert writes.groups == [[1], [2, 3, 4]]


async def test_a_failed_write_fails_every_submit_it_held_and_later_submits_are_still_written() -> None:
    writes = Writes(fail_first=1)
    writes.gate.clear()
    commit: GroupCommit[int, int] = GroupCommit(writes)
    failing = [asyncio.create_task(commit.submit(i)) for i in (1, 2, 3)]
    await started(writes, 1)
    later = asyncio.create_task(commit.submit(4))
    writes.gate.set()
    outcomes = await asyncio.gather(*failing, return_exceptions=True)
    assert [type(outcome) for outcome in outcomes] == [ConnectionError] * 3
    assert await later == 40
    assert await commit.submit(5) == 50  # and after the writer stopped, a new one starts
    assert writes.groups == [[1, 2, 3], [4], [5]]


@pytest.mark.parametrize(("submits", "groups"), [(7, [[0, 1, 2], [3, 4, 5], [6]]), (3, [[0, 1, 2]])])
async def test_a_group_holds_at_most_max_items_and_the_rest_follow_in_order(
    submits: int, groups: list[list[int]]
) -> None:
    writes = Writes()
    commit: GroupCommit[int, int] = GroupCommit(writes, max_items=3)
    assert await asyncio.gather(*(commit.submit(i) for i in range(submits))) == [i * 10 for i in range(submits)]
    assert writes.groups == groups


async def test_a_caller_that_stops_waiting_leaves_its_item_to_be_written() -> None:
    writes = Writes()
    writes.gate.clear()
    commit: GroupCommit[int, int] = GroupCommit(writes)
    impatient = asyncio.create_task(commit.submit(1))
    await started(writes, 1)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    writes.gate.set()
    assert await commit.submit(2) == 20
    assert writes.written == [[1], [2]]
