"""Capability URLs: a signed, expiring token that opens one request's event stream, and nothing else.

Browsers cannot send an Authorization header with `EventSource` (nor with `WebSocket`), so the 202
answer's `links.events` carries `?token=...`. The token names the tenant, the API key that minted
it and an expiry, and is an HMAC-SHA256 over (request id, tenant, key, expiry) with a secret all
gateways share through Postgres. It does not grant reading or cancelling through the API, and it is
worthless for any other request. The guard also checks that the key is still active, so revoking a
key revokes every token it minted. Tokens minted before tokens named their key (three parts, not
four) are refused: nothing says which key they speak for.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
import uuid
from dataclasses import dataclass

import asyncpg

from ackflow.db.queries import sql
from ackflow.errors import ConfigurationError
from ackflow.inputs import parse_digits

SIGNING_KEY_NAME = "capability-urls"
MAX_EXPIRES = 2**63 - 1


async def load_signing_key(pool: asyncpg.Pool) -> bytes:
    """The fleet-wide secret for capability tokens (created by the first gateway to ask)."""
    try:
        secret: bytes = await pool.fetchval(sql("ensure_signing_key"), SIGNING_KEY_NAME, os.urandom(32))
    except asyncpg.UndefinedTableError:
        raise ConfigurationError("the database is not migrated (DATABASE_URL): run `ackflow migrate` first") from None
    return secret


@dataclass(frozen=True)
class Grant:
    """What a valid token grants: the request's stream, for this tenant, while this key is active."""

    tenant_id: uuid.UUID
    key_id: uuid.UUID


class CapabilityTokens:
    """Issues and checks capability tokens for request event streams."""

    def __init__(self, secret: bytes, ttl_seconds: int) -> None:
        self._secret = secret
        self._ttl_seconds = ttl_seconds

    def issue(self, request_id: uuid.UUID, tenant_id: uuid.UUID, key_id: uuid.UUID, *, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + self._ttl_seconds)
        signature = self._sign(request_id, tenant_id, key_id, expires)
        return f"{_b64(tenant_id.bytes)}.{_b64(key_id.bytes)}.{expires}.{_b64(signature)}"

    def grant_for(self, token: str, request_id: uuid.UUID, *, now: float | None = None) -> Grant | None:
        """What the token grants for this request, or None if it is forged, expired, for another or unbound."""
        parts = token.split(".")
        expires = parse_digits(parts[2], maximum=MAX_EXPIRES) if len(parts) == 4 and len(token) <= 200 else None
        if expires is None:
            return None
        try:
            grant = Grant(uuid.UUID(bytes=_unb64(parts[0])), uuid.UUID(bytes=_unb64(parts[1])))
            signature = _unb64(parts[3])
        except (ValueError, binascii.Error):
            return None
        if expires < (now if now is not None else time.time()):
            return None
        if not hmac.compare_digest(signature, self._sign(request_id, grant.tenant_id, grant.key_id, expires)):
            return None
        return grant

    @staticmethod
    def unbound(token: str) -> bool:
        """A token of the form minted before tokens named their key (refused, with its own message)."""
        return token.count(".") == 2

    def _sign(self, request_id: uuid.UUID, tenant_id: uuid.UUID, key_id: uuid.UUID, expires: int) -> bytes:
        message = b"ackflow-events-v2|" + request_id.bytes + tenant_id.bytes + key_id.bytes + str(expires).encode()
        return hmac.new(self._secret, message, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
