"""The chaos scenarios, short and full, and the faults each one injects while the load runs.

The short form (`make test`) kills one process of each kind once and holds Temporal down for 20 s;
the full form (`make chaos`, ACKFLOW_CHAOS=full) kills every role process and every server in turn under a few hundred
requests, then holds Temporal down for 20 s and Postgres down for 10 s in scenarios of their own.
Arrivals are paced so that the load spans the faults.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from tests.chaos.stack import ChaosStack

FORM_VARIABLE = "ACKFLOW_CHAOS"
DOWN_SECONDS = 1.0  # how long a killed process stays dead before its restart
GAP_SECONDS = 3.0  # between one restart and the next kill


@dataclass(frozen=True)
class Scenario:
    """`requests` arrive at `rate` a second while each of `kills` is SIGKILLed and restarted in
    turn, then `outage` (a server, seconds) is held down; the stack then has `settle_seconds`.
    Four requests in ten sleep up to `sleep_seconds`, so work started in the `lead_in` seconds
    before an outage finishes (and is announced) all through it."""

    name: str
    requests: int
    rate: float
    kills: tuple[str, ...] = ()
    outage: tuple[str, float] | None = None
    settle_seconds: float = 120.0
    sleep_seconds: float = 0.3
    lead_in: float = 3.0  # load flows this long before the first fault
    role_env: tuple[tuple[str, str], ...] = ()  # settings of this scenario's roles, over stack.role_env()


# The dispatcher renews its leases every lease/3 s; a renewal that falls while a failed hand-off to
# Temporal is retried re-leases the delivery and hides a stranded one. A 2-minute lease (renewed
# every 40 s) keeps that from masking it under a Temporal outage, where no worker is killed.
LONG_WEBHOOK_LEASE = (("ACKFLOW_WEBHOOK_LEASE_SECONDS", "120"),)

SHORT = (
    Scenario(
        "kill-each-kind",
        requests=80,
        rate=2.5,
        kills=("worker-1", "relay-1", "gateway", "redis", "postgres", "temporal"),
        settle_seconds=60,
    ),
    Scenario(
        "short-temporal-down-20s",
        requests=160,
        rate=8.0,
        outage=("temporal", 20.0),
        settle_seconds=150,
        sleep_seconds=10.0,
        lead_in=8.0,
        role_env=LONG_WEBHOOK_LEASE,
    ),
)
FULL = (
    Scenario(
        "kill-every-process",
        requests=400,
        rate=7.0,
        kills=("gateway", "relay-1", "worker-1", "redis", "relay-2", "worker-2", "postgres", "temporal"),
        settle_seconds=150,
    ),
    Scenario(
        "temporal-down-20s",
        requests=300,
        rate=8.0,
        outage=("temporal", 20.0),
        settle_seconds=150,
        sleep_seconds=10.0,
        lead_in=10.0,
        role_env=LONG_WEBHOOK_LEASE,
    ),
    Scenario(
        "postgres-down-10s",
        requests=200,
        rate=8.0,
        outage=("postgres", 10.0),
        settle_seconds=150,
        sleep_seconds=3.0,
        lead_in=6.0,
    ),
)


def selected_scenarios() -> tuple[Scenario, ...]:
    """The short form unless ACKFLOW_CHAOS=full."""
    form = os.environ.get(FORM_VARIABLE, "short").strip().lower() or "short"
    if form not in ("short", "full"):
        raise ValueError(f"{FORM_VARIABLE}={form!r} is not valid: use short or full")
    return FULL if form == "full" else SHORT


async def hold(seconds: float) -> None:
    """Let time pass on purpose: the length of a fault, not a wait for a condition."""
    await asyncio.sleep(seconds)


async def inject_faults(stack: ChaosStack, scenario: Scenario) -> None:
    """Kill and restart each of the scenario's processes in turn, then hold its outage."""
    await hold(scenario.lead_in)
    for name in scenario.kills:
        stack.kill(name)
        await hold(DOWN_SECONDS)
        await stack.restart(name)
        await hold(GAP_SECONDS)
    if scenario.outage is not None:
        name, seconds = scenario.outage
        stack.kill(name)
        await hold(seconds)
        await stack.restart(name)
