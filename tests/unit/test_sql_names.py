"""The SQL spells the names the Python defines once (delivery states, request statuses, topics,
NOTIFY channels), and no others.

SQL cannot import them, and a partial index only serves a query whose literals match its own, so the
statements keep their literals and these tests hold them to the Python's values.
"""

from __future__ import annotations

import re

from ackflow.contracts import (
    ALL_STATUSES,
    EVENT_TOPICS,
    INIT,
    TERMINAL_STATUSES,
    TOPIC_ACCEPTED,
    TOPIC_BATCH,
    TOPIC_CANCEL_REQUESTED,
    TOPIC_FOR_STATUS,
    TOPIC_INPUT,
    TOPIC_SUPERSEDE,
    DeliveryState,
    work_workflow_id,
    workflow_id_for,
)
from ackflow.db.listen import OUTBOX_CHANNEL, WEBHOOKS_CHANNEL
from ackflow.db.migrate import available_migrations
from ackflow.db.queries import _load

_COMMENT = re.compile(r"--[^\n]*")
_WORD_LITERAL = re.compile(r"'([a-z]+)'")  # a delivery state is one lowercase word; 'msg_' and 'request.x' are not
_NOT_A_STATE = {"hex"}  # encode(..., 'hex') in fan_out_webhooks
_STATE_CHECK = re.compile(r"CHECK \(state IN \(([^)]*)\)\)")
_STATUS_LITERAL = re.compile(r"'([A-Z]+)'")
_NOT_A_STATUS = {"UTC", "Z"}  # ackflow_timestamp, migration 0014
_STATUS_SET = re.compile(r"IN \(('[A-Z]+'(?:, '[A-Z]+')*)\)")
_TOPIC_LITERAL = re.compile(r"'(request\.[a-z_]+)'")
_NOTIFY = re.compile(r"pg_notify\('(\w+)'")


def _statements() -> dict[str, str]:
    """Every statement ackflow runs, by name (queries.sql) or by migration and position, without comments."""
    found = {f"queries.sql:{name}": _COMMENT.sub("", body) for name, body in _load().items()}
    for migration in available_migrations():
        for number, statement in enumerate(_COMMENT.sub("", migration.sql).split(";")):
            found[f"migration {migration.version}, statement {number}"] = statement
    return found


def _literals(text: str) -> set[str]:
    return {match.strip().strip("'") for match in text.split(",")}


def test_the_sql_spells_only_delivery_states_that_the_enum_defines() -> None:
    states = set(DeliveryState)
    wrong = {
        where: sorted(literals - states - _NOT_A_STATE)
        for where, statement in _statements().items()
        if "webhook_deliveries" in statement
        and (literals := set(_WORD_LITERAL.findall(statement))) - states - _NOT_A_STATE
    }
    assert wrong == {}, "a delivery state in SQL that DeliveryState does not define"


def test_the_state_check_of_webhook_deliveries_allows_exactly_the_enum() -> None:
    checks = [_STATE_CHECK.findall(m.sql) for m in available_migrations()]
    latest = [found for found in checks if found][-1][-1]
    assert _literals(latest) == set(DeliveryState)


def test_the_sql_spells_only_request_statuses_and_topics_that_the_contracts_define() -> None:
    text = "\n".join(_statements().values())
    assert set(_STATUS_LITERAL.findall(text)) - _NOT_A_STATUS == set(ALL_STATUSES)
    commands = {TOPIC_ACCEPTED, TOPIC_BATCH, TOPIC_CANCEL_REQUESTED, TOPIC_INPUT, TOPIC_SUPERSEDE}
    assert set(_TOPIC_LITERAL.findall(text)) <= EVENT_TOPICS | commands
    # transition_requests names a status's topic 'request.' || lower(status)
    assert all(TOPIC_FOR_STATUS[status] == "request." + status.lower() for status in ALL_STATUSES if status != INIT)
    # requests of before batches ran in workflow 'request-' || id
    assert "'request-' || r.id::text" in text and workflow_id_for("r.id") == "request-r.id"
    # a workflow kind's run is 'work-' || id
    assert "'work-' || c.id::text" in text and work_workflow_id("c.id") == "work-c.id"


def test_every_set_of_statuses_in_the_sql_is_all_of_them_or_the_terminal_ones() -> None:
    sets = {frozenset(_literals(found)) for found in _STATUS_SET.findall("\n".join(_statements().values()))}
    assert sets == {frozenset(ALL_STATUSES), TERMINAL_STATUSES}


def test_the_triggers_notify_the_channels_the_loops_listen_on() -> None:
    text = "\n".join(m.sql for m in available_migrations())
    assert set(_NOTIFY.findall(text)) == {OUTBOX_CHANNEL, WEBHOOKS_CHANNEL}
