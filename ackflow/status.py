"""`ackflow status`: each stage's health at a glance, from the same snapshot the relay's metrics
publish (ackflow/db/stage_health.py): the outbox by topic, requests in flight and waiting for
admission, webhook deliveries and endpoints, dead letters. Plain aligned text, or `--json`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import asyncpg

from ackflow.db.stage_health import StageHealth, read_stage_health


async def print_status(connection: asyncpg.Connection, *, as_json: bool) -> None:
    """Read the snapshot once and print it."""
    health = await read_stage_health(connection)
    print(json.dumps(status_document(health), indent=2, sort_keys=True) if as_json else format_status(health))


def status_document(health: StageHealth) -> dict[str, Any]:
    """The snapshot as JSON types, with the totals a script wants first."""
    document = dataclasses.asdict(health)
    document["outbox_rows"] = sum(backlog.rows for backlog in health.outbox.values())
    document["in_flight_total"] = sum(health.in_flight.values())
    document["waiting_admission_total"] = sum(health.waiting_admission.values())
    return document


def format_status(health: StageHealth) -> str:
    """The snapshot as aligned lines, a section per stage; an empty part says so."""
    lines = ["outbox (waiting to be relayed, by topic)"]
    if not health.outbox:
        lines.append("  empty")
    for topic, backlog in sorted(health.outbox.items()):
        lines.append(f"  {topic:<28}{backlog.rows:>10} rows   oldest {_age(backlog.oldest_age_seconds)}")
    lines.append(f"  {'dead letters':<28}{health.dead_letters:>10}")
    lines.append("requests")
    lines.append(f"  {'in flight':<28}{sum(health.in_flight.values()):>10}")
    lines.extend(f"    {tenant:<26}{count:>10}" for tenant, count in sorted(health.in_flight.items()))
    lines.append(
        f"  {'waiting admission':<28}{sum(health.waiting_admission.values()):>10}"
        f"   oldest {_age(health.oldest_admission_wait_seconds)}"
    )
    lines.extend(f"    {tenant:<26}{count:>10}" for tenant, count in sorted(health.waiting_admission.items()))
    lines.append("webhooks")
    lines.extend(f"  {'deliveries ' + state:<28}{count:>10}" for state, count in health.deliveries.items())
    lines.append(f"  {'endpoints disabled':<28}{health.endpoints_disabled:>10}")
    return "\n".join(lines)


def _age(seconds: float) -> str:
    """0s, 42s, 3m05s, 2h07m: short enough to scan a column."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
