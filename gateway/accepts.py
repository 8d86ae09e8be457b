"""Accepting one request: the checks of its body beyond the schema, the accept statement, and the
202 body. Shared by POST /v1/requests and each item of POST /v1/requests/batch."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
from litestar import Request

from ackflow.contracts import KEY_QUEUE, MAX_DELAY_SECONDS
from ackflow.db.accept import accept_request
from ackflow.db.queries import sql
from ackflow.errors import InvalidInput, KeyBusy, UnknownKind
from ackflow.ids import new_request_id
from ackflow.settings import Settings
from ackflow.tracing import inject
from gateway.auth import current_key, current_tenant
from gateway.capabilities import CapabilityTokens
from gateway.json_depth import check_depth
from gateway.schemas import AcceptedRequest, CreateRequest, Links


def check_controls(data: CreateRequest, max_json_depth: int) -> None:
    """What the schema cannot say: a payload nested too deep, a time given twice or too far ahead, an
    expiry before the start, a concurrency limit or policy without a key, a tag given twice."""
    check_depth(data.payload, max_json_depth)
    _check_schedule(data)
    _check_key_and_tags(data)


def nul_in_payload() -> InvalidInput:
    """The problem of a payload with U+0000, which Postgres jsonb cannot store in a string or key."""
    return InvalidInput(
        "the payload contains a NUL character (\\u0000), which cannot be stored",
        errors=[{"field": "payload", "in": "body", "message": "strings and keys must not contain \\u0000"}],
    )


def _check_schedule(data: CreateRequest) -> None:
    """A delayed start and an expiry each name their time once, no further ahead than
    MAX_DELAY_SECONDS, and a request does not expire before it is due to start."""
    now = datetime.now(UTC)
    furthest = now + timedelta(seconds=MAX_DELAY_SECONDS)
    for at, seconds, (at_field, seconds_field) in (
        (data.run_at, data.delay_seconds, ("run_at", "delay_seconds")),
        (data.expires_at, data.ttl_seconds, ("expires_at", "ttl_seconds")),
    ):
        if at is not None and seconds is not None:
            raise InvalidInput(
                f"give {at_field} or {seconds_field}, not both",
                errors=[{"field": seconds_field, "in": "body", "message": f"not allowed with {at_field}"}],
            )
        if at is not None and at > furthest:
            raise InvalidInput(
                f"{at_field} is more than {MAX_DELAY_SECONDS // 86400} days ahead",
                errors=[{"field": at_field, "in": "body", "message": f"at most {MAX_DELAY_SECONDS} s from now"}],
            )
    starts = data.run_at or now + timedelta(seconds=data.delay_seconds or 0)
    expires = data.expires_at or (now + timedelta(seconds=data.ttl_seconds) if data.ttl_seconds else None)
    if expires is not None and expires <= starts:
        field = "expires_at" if data.expires_at is not None else "ttl_seconds"
        raise InvalidInput(
            "the request would expire before it is due to start",
            errors=[{"field": field, "in": "body", "message": "must be after run_at / delay_seconds and now"}],
        )


def _check_key_and_tags(data: CreateRequest) -> None:
    """A concurrency limit or policy comes with a concurrency key; tags are not repeated."""
    if data.concurrency_key is None:
        for field, given in (
            ("concurrency_limit", data.concurrency_limit is not None),
            ("concurrency_policy", data.concurrency_policy != KEY_QUEUE),
        ):
            if given:
                raise InvalidInput(
                    f"{field} needs a concurrency_key",
                    errors=[{"field": field, "in": "body", "message": "only with concurrency_key"}],
                )
    if data.tags is not None and len(set(data.tags)) != len(data.tags):
        raise InvalidInput(
            "a tag is given twice", errors=[{"field": "tags", "in": "body", "message": "tags must be distinct"}]
        )


async def insert_request(
    pool: asyncpg.Pool | asyncpg.Connection,
    tenant_id: uuid.UUID,
    data: CreateRequest,
    settings: Settings,
    submitted_batch_id: uuid.UUID | None = None,
) -> asyncpg.Record:
    """The accept statement; its input errors (unknown kind, unstorable payload, a busy key under
    skip) leave nothing written."""
    try:
        row = await accept_request(
            pool,
            new_request_id(),
            tenant_id,
            data.kind,
            data.payload,
            callback_url=data.callback_url,
            callback_events=data.callback_events,
            trace_context=inject(),  # the POST's server span (None when not tracing)
            run_at=data.run_at,
            delay_seconds=data.delay_seconds,
            expires_at=data.expires_at,
            ttl_seconds=data.ttl_seconds,
            concurrency_key=data.concurrency_key,
            concurrency_limit=data.concurrency_limit,
            concurrency_policy=data.concurrency_policy,
            priority=data.priority,
            priority_aging_seconds=settings.priority_aging_seconds,
            tags=data.tags,
            submitted_batch_id=submitted_batch_id,
        )
    except asyncpg.UntranslatableCharacterError:
        raise nul_in_payload() from None  # the one statement failed as a whole
    if row is None:
        raise UnknownKind(
            f"no worker handles kind {data.kind!r}; start a worker whose handlers include it",
            errors=[{"field": "kind", "in": "body", "message": "no handler is registered for this kind"}],
        )
    if row["id"] is None:
        holders = await pool.fetch(sql("key_holders"), tenant_id, data.concurrency_key)
        raise KeyBusy(
            f"concurrency key {data.concurrency_key!r} is full and concurrency_policy is skip: nothing was accepted",
            holders=[str(holder["id"]) for holder in holders],
        )
    return row


def accepted_body(row: asyncpg.Record, request: Request[Any, Any, Any], tokens: CapabilityTokens) -> dict[str, Any]:
    token = tokens.issue(row["id"], current_tenant(request), current_key(request))
    location = f"/v1/requests/{row['id']}"
    body = AcceptedRequest(
        id=row["id"],
        kind=row["kind"],
        status=row["status"],
        version=row["version"],
        created_at=row["created_at"],
        links=Links(self=location, events=f"{location}/events?token={token}"),
        scheduled_for=row["scheduled_for"],
        expires_at=row["expires_at"],
        waiting_for=row["waiting_for"],
    )
    built: dict[str, Any] = msgspec.to_builtins(body)
    return built
