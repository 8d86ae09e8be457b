"""CPU time per process, read from /proc: what each stage costs, which a noisy machine does not blur.

Throughput on a shared 2-core box moves with every other job; CPU seconds spent per request move
far less. Sampling every process of the stack around a step says, for instance, how many
milliseconds of the Temporal server's CPU one ackflow request costs against one raw workflow.
A process's own time plus that of its live descendants counts (Postgres runs a backend process
per connection); Linux only, and an empty reading elsewhere.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.loadgen import Step

PROC = Path("/proc")
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: str) -> list[str] | None:
    try:
        text = (PROC / pid / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # the command name may contain spaces and parentheses


def cpu_seconds(pids: Mapping[str, int]) -> dict[str, float]:
    """name -> user + system CPU seconds of that process and its live descendants."""
    if not PROC.is_dir():
        return {}
    children: dict[int, list[int]] = defaultdict(list)
    ticks: dict[int, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is None:
            continue
        pid = int(entry.name)
        children[int(fields[1])].append(pid)  # field 4 of stat: the parent's pid
        ticks[pid] = int(fields[11]) + int(fields[12])  # fields 14 and 15: utime, stime

    def tree(pid: int) -> int:
        return ticks.get(pid, 0) + sum(tree(child) for child in children.get(pid, ()))

    return {name: tree(pid) / TICKS_PER_SECOND for name, pid in pids.items()}


def cpu_spent(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds each process spent between two readings."""
    return {name: round(after[name] - before.get(name, 0.0), 3) for name in after}


def cpu_per_request(steps: list[Step]) -> dict[str, float]:
    """Each process's CPU milliseconds per completed request over all the given steps together."""
    done = sum(len(step.ok) for step in steps)
    totals: dict[str, float] = {}
    for step in steps:
        for name, seconds in step.cpu.items():
            totals[name] = totals.get(name, 0.0) + seconds
    return {name: round(seconds * 1000 / done, 2) for name, seconds in sorted(totals.items())} if done else {}


class CoresInUse:
    """How many cores each process, and the benchmark itself (the load generator), kept busy over a span.

    `with CoresInUse(pids) as used: ...` then `used.by_process` (name -> cores, "bench" for this
    process alone) and `used.total`. Says whether the machine itself was the limit.
    """

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self.by_process: dict[str, float] = {}

    def __enter__(self) -> CoresInUse:
        self._start = (time.monotonic(), cpu_seconds(self._pids), _own_cpu_seconds())
        return self

    def __exit__(self, *exc: object) -> None:
        wall, before, own = self._start
        spent = cpu_spent(before, cpu_seconds(self._pids)) | {"bench": _own_cpu_seconds() - own}
        seconds = max(time.monotonic() - wall, 1e-9)
        cores = {name: round(cpu / seconds, 2) for name, cpu in spent.items()}
        self.by_process = {name: used for name, used in cores.items() if used > 0}

    @property
    def total(self) -> float:
        return round(sum(self.by_process.values()), 2)


def _own_cpu_seconds() -> float:
    """This process's user + system CPU, without its children (the stack's processes are its children)."""
    times = os.times()
    return times.user + times.system
