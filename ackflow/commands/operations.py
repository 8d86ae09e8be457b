"""`ackflow migrate | prune | outbox | status | requests show`: the operator's one-shot commands on Postgres."""

from __future__ import annotations

import argparse
from typing import Any

from ackflow.commands import with_database
from ackflow.settings import Settings


def add_operation_commands(commands: Any) -> None:
    """Add these commands to the `ackflow` parser's subcommands."""
    commands.add_parser("migrate", help="apply database migrations").set_defaults(run=_migrate)
    commands.add_parser(
        "prune", help="delete finished work past its retention now (one pass; relays also do it)"
    ).set_defaults(run=_prune)

    outbox = commands.add_parser("outbox", help="outbox rows waiting or failing, and dead letters")
    outbox.add_argument("--dead", action="store_true", help="list dead-lettered rows instead")
    outbox.add_argument("--limit", type=int, default=50, help="rows to list, oldest first (default: 50)")
    outbox.set_defaults(run=_outbox_list)
    outbox_commands = outbox.add_subparsers(dest="outbox_command", metavar="ACTION")
    for action, run, text in (
        ("retry", _outbox_retry, "dispatch a row (dead or postponed) again now, its attempts from zero"),
        ("drop", _outbox_drop, "delete a row: its event is never dispatched"),
    ):
        parser_ = outbox_commands.add_parser(action, help=text)
        parser_.add_argument("id", type=int)
        parser_.set_defaults(run=run)

    status = commands.add_parser("status", help="each stage's health: outbox, admission, webhooks, dead letters")
    status.add_argument("--json", action="store_true", help="print JSON for scripts instead of aligned text")
    status.set_defaults(run=_status)
    requests = commands.add_parser("requests", help="inspect requests (any tenant's)")
    requests_commands = requests.add_subparsers(dest="requests_command", required=True, metavar="ACTION")
    show = requests_commands.add_parser(
        "show", help="a request's state, event history, workflow (Temporal UI link), trace id and webhook deliveries"
    )
    show.add_argument("id", help="the request id")
    show.add_argument("--json", action="store_true", help="print one JSON document instead")
    show.set_defaults(run=_requests_show)


def _migrate(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.migrate import migrate

    async def run(connection: Any) -> None:
        applied = await migrate(connection)
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "none (up to date)"
        print(f"migrations applied: {names}")

    with_database(settings, run)


def _prune(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.retention import RetentionPolicy, describe, prune

    async def run(connection: Any) -> None:
        counts = await prune(connection, RetentionPolicy.from_settings(settings))
        print(f"pruned {describe(counts)}")

    with_database(settings, run)


def _outbox_list(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.queries import sql

    async def run(connection: Any) -> None:
        rows = await connection.fetch(sql("list_outbox"), args.dead, args.limit)
        if not rows:
            print("no dead-lettered outbox rows" if args.dead else "the outbox is empty")
        for row in rows:
            stamp = "%Y-%m-%d %H:%M:%S"
            when = f"dead {row['dead_at']:{stamp}}" if row["dead_at"] else f"due {row['available_at']:{stamp}}"
            print(
                f"{row['id']}  {row['topic']}  request {row['request_id']}  created {row['created_at']:{stamp}}"
                f"  {when}  attempts {row['attempts']}  {row['last_error'] or ''}".rstrip()
            )

    with_database(settings, run)


def _outbox_retry(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.db.queries import sql
    from ackflow.errors import Conflict

    async def run(connection: Any) -> None:
        row = await _outbox_row(connection, args.id)
        if await connection.fetchrow(sql("retry_outbox_row"), args.id) is None:
            raise Conflict(f"request {row['request_id']} has already ended {row['status']}: submit it again instead")
        print(f"outbox row {args.id} ({row['topic']}, request {row['request_id']}) will be dispatched again now")

    with_database(settings, run)


def _outbox_drop(args: argparse.Namespace, settings: Settings) -> None:
    """Delete a row; accepted requests whose row (or batch row) is dropped can never start, so they end FAILED."""
    from ackflow.db.queries import sql
    from ackflow.db.transitions import fail_unstarted

    async def run(connection: Any) -> None:
        row = await _outbox_row(connection, args.id)
        async with connection.transaction():
            dropped = await connection.fetchrow(sql("drop_outbox_row"), args.id)
            if dropped is not None:
                error = {"type": "DispatchDropped", "message": "an operator dropped its outbox row before it started"}
                await fail_unstarted(connection, dropped, error)
        print(
            f"outbox row {args.id} ({row['topic']}, request {row['request_id']}) dropped: it will never be dispatched"
        )

    with_database(settings, run)


async def _outbox_row(connection: Any, row_id: int) -> Any:
    from ackflow.db.queries import sql
    from ackflow.errors import NotFound

    row = await connection.fetchrow(sql("outbox_row"), row_id)
    if row is None:
        raise NotFound(f"no outbox row has id {row_id}")
    return row


def _status(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.status import print_status

    async def run(connection: Any) -> None:
        await print_status(connection, as_json=args.json)

    with_database(settings, run)


def _requests_show(args: argparse.Namespace, settings: Settings) -> None:
    from ackflow.ops_requests import render_json, render_text, request_report

    async def run(connection: Any) -> None:
        ui, namespace = settings.temporal_ui_url, settings.temporal_namespace
        report = await request_report(connection, args.id, ui_url=ui, namespace=namespace)
        print(render_json(report) if args.json else render_text(report))

    with_database(settings, run)
