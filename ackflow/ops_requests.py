"""`ackflow requests show ID`: one request as an operator needs it, from Postgres alone.

Its state, its whole event history, the Temporal workflow it runs in (with a link into the Temporal
UI), its trace id (when requests carry a W3C `trace_context`), and every webhook delivery of it with
each attempt. Read across tenants: this is the operator's view, not the API's.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from ackflow.db.queries import sql
from ackflow.errors import InvalidInput, NotFound
from ackflow.timestamps import wire_timestamp
from ackflow.tracing import trace_id_of

SUMMARY_CHARS = 80  # an event's data, shortened to one readable line


async def request_report(connection: Any, given_id: str, *, ui_url: str, namespace: str) -> dict[str, Any]:
    """Everything `requests show` prints, as plain JSON-ready data; NotFound for an unknown id."""
    try:
        request_id = uuid.UUID(given_id)
    except ValueError:
        raise InvalidInput(f"{given_id!r} is not a request id (a UUID such as 0190f1e2-...)") from None
    row = await connection.fetchrow(sql("operator_request"), request_id)
    if row is None:
        raise NotFound(f"no request has id {request_id}")
    events = await connection.fetch(sql("operator_request_events"), request_id)
    deliveries = await connection.fetch(sql("operator_request_deliveries"), request_id)
    attempts = await connection.fetch(sql("operator_delivery_attempts"), [d["id"] for d in deliveries])
    workflow_id = row["workflow_id"]
    return {
        "id": str(row["id"]),
        "tenant": row["tenant"],
        "tenant_id": str(row["tenant_id"]),
        "kind": row["kind"],
        "status": row["status"],
        "version": row["version"],
        "created_at": _when(row["created_at"]),
        "updated_at": _when(row["updated_at"]),
        "completed_at": _when(row["completed_at"]),
        "error": row["error"],
        "workflow_id": workflow_id,
        "workflow_url": f"{ui_url}/namespaces/{namespace}/workflows/{workflow_id}" if workflow_id else None,
        "trace_id": trace_id_of(row["trace_context"]),
        "events": [_event(event) for event in events],
        "deliveries": [_delivery(delivery, attempts) for delivery in deliveries],
    }


def render_json(report: dict[str, Any]) -> str:
    """The report as one JSON document."""
    return msgspec.json.format(msgspec.json.encode(report)).decode()


def render_text(report: dict[str, Any]) -> str:
    """The report for a person: the state, then the events and the deliveries, one line each."""
    error = report["error"]
    lines = [
        f"request   {report['id']}",
        f"tenant    {report['tenant']} ({report['tenant_id']})",
        f"kind      {report['kind']}",
        f"status    {report['status']} (version {report['version']})",
        f"created   {report['created_at']}   updated {report['updated_at']}",
    ]
    if error:
        lines.append(f"error     {error.get('type', '')}: {error.get('message', '')}")
    lines.append(f"workflow  {report['workflow_id'] or '(not started)'}")
    if report["workflow_url"]:
        lines.append(f"          {report['workflow_url']}")
    lines.append(f"trace     {report['trace_id'] or '(none recorded)'}")
    lines.append(f"\nevents ({len(report['events'])})")
    lines += [
        f"  {e['id']:>6}  v{e['version']:<3} {e['created_at']}  {e['topic']:<20} {e['summary']}".rstrip()
        for e in report["events"]
    ]
    lines.append(f"\nwebhook deliveries ({len(report['deliveries'])})")
    for d in report["deliveries"]:
        lines.append(f"  {d['id']}  {d['event_type']}  {d['state']}  {d['url']}")
        lines += [
            f"      #{a['attempt']} {a['trigger']:<6} {a['attempted_at']}  "
            f"{a['status_code'] or '-'}  {a['latency_ms']} ms  {a['error'] or ''}".rstrip()
            for a in d["attempts"]
        ]
    return "\n".join(lines)


def _event(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "topic": row["topic"],
        "status": row["status"],
        "version": row["version"],
        "created_at": _when(row["created_at"]),
        "summary": _summary(row["data"]),
    }


def _delivery(row: Any, attempts: list[Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "endpoint_id": str(row["endpoint_id"]) if row["endpoint_id"] else None,  # None: the request's callback_url
        "event_type": row["event_type"],
        "url": row["url"],
        "state": row["state"],
        "attempts": [
            {
                "attempt": a["attempt"],
                "trigger": a["trigger"],
                "attempted_at": _when(a["attempted_at"]),
                "status_code": a["status_code"],
                "latency_ms": a["latency_ms"],
                "error": a["error"],
            }
            for a in attempts
            if a["delivery_id"] == row["id"]
        ],
    }


def _summary(data: Any) -> str:
    """What an event added: its result or error, on one line, shortened."""
    if not isinstance(data, dict):
        return ""
    shown = {key: data[key] for key in ("result", "error") if data.get(key) is not None}
    text = msgspec.json.encode(shown).decode() if shown else ""
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def _when(value: datetime | None) -> str | None:
    return wire_timestamp(value) if value is not None else None
