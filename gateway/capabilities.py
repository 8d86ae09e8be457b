"""Capability URLs: a signed, expiring token that opens one request's event stream, and nothing else.

Browsers cannot send an Authorization header with `EventSource` (nor with `WebSocket`), so the 202
answer's `links.events` carries `?token=...`. The token names the tenant and an expiry and is an
HMAC-SHA256 over (request id, tenant, expiry) with a secret all gateways share through Postgres. It
does not grant reading or cancelling through the API, and it is worthless for any other request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
import uuid

import asyncpg

from ackflow.db.queries import sql
from ackflow.errors import ConfigurationError

SIGNING_KEY_NAME = "capability-urls"


async def load_signing_key(pool: asyncpg.Pool) -> bytes:
    """The fleet-wide secret for capability tokens (created by the first gateway to ask)."""
    try:
        secret: bytes = await pool.fetchval(sql("ensure_signing_key"), SIGNING_KEY_NAME, os.urandom(32))
    except asyncpg.UndefinedTableError:
        raise ConfigurationError("the database is not migrated (DATABASE_URL): run `ackflow migrate` first") from None
    return secret


class CapabilityTokens:
    """Issues and checks capability tokens for request event streams."""

    def __init__(self, secret: bytes, ttl_seconds: int) -> None:
        self._secret = secret
        self._ttl_seconds = ttl_seconds

    def issue(self, request_id: uuid.UUID, tenant_id: uuid.UUID, *, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + self._ttl_seconds)
        signature = self._sign(request_id, tenant_id, expires)
        return f"{_b64(tenant_id.bytes)}.{expires}.{_b64(signature)}"

    def tenant_for(self, token: str, request_id: uuid.UUID, *, now: float | None = None) -> uuid.UUID | None:
        """The tenant the token was issued to for this request, or None if it is forged, expired or for another."""
        parts = token.split(".")
        if len(parts) != 3 or len(token) > 200 or not parts[1].isdigit():
            return None
        try:
            tenant_id = uuid.UUID(bytes=_unb64(parts[0]))
            signature = _unb64(parts[2])
        except (ValueError, binascii.Error):
            return None
        expires = int(parts[1])
        if expires < (now if now is not None else time.time()):
            return None
        if not hmac.compare_digest(signature, self._sign(request_id, tenant_id, expires)):
            return None
        return tenant_id

    def _sign(self, request_id: uuid.UUID, tenant_id: uuid.UUID, expires: int) -> bytes:
        message = b"ackflow-events|" + request_id.bytes + tenant_id.bytes + str(expires).encode()
        return hmac.new(self._secret, message, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
