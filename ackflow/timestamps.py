"""The one form of a time on the wire: RFC 3339 in UTC with a `Z`, with microseconds when there are
any (`2026-12-02T02:09:06.250018Z`, `2026-12-02T02:09:06Z`).

It is how msgspec encodes the UTC datetimes of every API answer (GET /v1/requests/{id}, the webhooks
API), so Python writes it by that same encoding here. Status events' `data`, which SSE, WebSocket,
the tenant stream and webhooks carry, is built in Postgres, whose `ackflow_timestamp()` (migration
0014) writes the same form; tests/e2e/test_timestamps.py holds the two together.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec


def wire_timestamp(moment: datetime) -> str:
    """`moment` (timezone-aware) as every ackflow channel writes a time."""
    return msgspec.json.encode(moment.astimezone(UTC)).decode().strip('"')
