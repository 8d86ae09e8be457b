"""Idempotency keys for POST /v1/requests, per the IETF `Idempotency-Key` draft, as Stripe does it.

A retry with the same key and the same request (method, path and body: the fingerprint) gets the
original response and creates nothing; the same key with a different request is a 422; a retry
while the first is still being written is a 409 (so a client never waits on a lock). The key is
claimed with a transaction-scoped advisory lock and written in the same transaction as the
request, so exactly one request exists per key, however many clients race. Keys are scoped to the
tenant and kept for `ttl_seconds` (24 h by default).
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from ackflow.db.queries import sql
from ackflow.errors import Conflict, InvalidInput

MAX_KEY_LENGTH = 255
HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class IdempotencyKey:
    key: str
    fingerprint: bytes


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: dict[str, Any]


@dataclass
class Claim:
    """A claimed key: either the response to replay, or a connection (in the claim's transaction)
    on which to create the request, then `remember` its response."""

    connection: asyncpg.Connection
    tenant_id: uuid.UUID
    key: IdempotencyKey
    ttl_seconds: int
    replay: StoredResponse | None = None

    async def remember(self, request_id: uuid.UUID, status: int, body: dict[str, Any]) -> None:
        await self.connection.execute(
            sql("remember_idempotent_response"),
            self.tenant_id,
            self.key.key,
            self.key.fingerprint,
            request_id,
            status,
            body,
            self.ttl_seconds,
        )


def parse_key(header: str | None, method: str, path: str, body: bytes) -> IdempotencyKey | None:
    """The request's key and fingerprint; None without the header; 400 for a malformed key."""
    if header is None:
        return None
    key = header.strip().removeprefix('"').removesuffix('"')  # the draft sends it as a quoted string
    if not key or len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise InvalidInput(
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
            status_code=400,
            errors=[{"field": HEADER, "in": "header", "message": "malformed key"}],
        )
    fingerprint = hashlib.sha256(method.encode() + b"\n" + path.encode() + b"\n" + body).digest()
    return IdempotencyKey(key, fingerprint)


@contextlib.asynccontextmanager
async def claim_key(
    pool: asyncpg.Pool, tenant_id: uuid.UUID, key: IdempotencyKey, *, ttl_seconds: int
) -> AsyncIterator[Claim]:
    """Hold the key for this request for the length of one transaction."""
    async with pool.acquire() as connection, connection.transaction():
        yield await claim_on(connection, tenant_id, key, ttl_seconds=ttl_seconds)


async def claim_on(
    connection: asyncpg.Connection, tenant_id: uuid.UUID, key: IdempotencyKey, *, ttl_seconds: int
) -> Claim:
    """Claim the key in the transaction `connection` is in (held until it ends): the claim, with the
    response to replay if the key was used before with the same request. (A batch claims each item's
    key this way, all in the batch's transaction.)"""
    if not await connection.fetchval(sql("lock_idempotency_key"), _lock_id(tenant_id, key.key)):
        raise Conflict(f"a request with this {HEADER} is still being processed; retry in a moment")
    stored = await connection.fetchrow(sql("idempotent_response"), tenant_id, key.key)
    claim = Claim(connection, tenant_id, key, ttl_seconds)
    if stored is not None:
        if bytes(stored["fingerprint"]) != key.fingerprint:
            raise InvalidInput(
                f"this {HEADER} was already used with a different request; use a new key for a new request",
                errors=[{"field": HEADER, "in": "header", "message": "key reused with another body"}],
            )
        claim.replay = StoredResponse(stored["response_status"], stored["response_body"])
    return claim


def _lock_id(tenant_id: uuid.UUID, key: str) -> int:
    digest = hashlib.sha256(b"ackflow-idempotency|" + tenant_id.bytes + key.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
