"""Capability URLs: a signed, expiring token that opens one request's event stream, or delivers one
named input to one waiting request, and nothing else.

Browsers cannot send an Authorization header with `EventSource` (nor with `WebSocket`), so the 202
answer's `links.events` carries `?token=...`. The token names the tenant, the API key that minted
it and an expiry, and is an HMAC-SHA256 over (request id, tenant, key, expiry) with a secret all
gateways share through Postgres. It does not grant reading or cancelling through the API, and it is
worthless for any other request. The guard also checks that the key is still active, so revoking a
key revokes every token it minted. An input token (`links.input` of a waiting request, for a
third party or an e-mail link) has a fifth part, the input's name, which its signature covers too,
under a different prefix: neither kind of token passes for the other. Tokens minted before tokens
named their key (three parts, not four) are refused: nothing says which key they speak for.
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
    """What a valid token grants: the request's stream (or, with `input`, delivering that input), for
    this tenant, while this key is active."""

    tenant_id: uuid.UUID
    key_id: uuid.UUID
    input: str | None = None


class CapabilityTokens:
    """Issues and checks capability tokens for request event streams and waiting requests' inputs."""

    def __init__(self, secret: bytes, ttl_seconds: int, input_ttl_seconds: int = 7 * 24 * 3600) -> None:
        self._secret = secret
        self._ttl_seconds = ttl_seconds
        self._input_ttl_seconds = input_ttl_seconds

    def issue(self, request_id: uuid.UUID, tenant_id: uuid.UUID, key_id: uuid.UUID, *, now: float | None = None) -> str:
        """A token that opens the request's event stream."""
        expires = int((now if now is not None else time.time()) + self._ttl_seconds)
        signature = self._sign(request_id, Grant(tenant_id, key_id), expires)
        return f"{_b64(tenant_id.bytes)}.{_b64(key_id.bytes)}.{expires}.{_b64(signature)}"

    def issue_input(
        self, request_id: uuid.UUID, tenant_id: uuid.UUID, key_id: uuid.UUID, name: str, *, now: float | None = None
    ) -> str:
        """A token that delivers the input `name` to the request, and nothing else."""
        expires = int((now if now is not None else time.time()) + self._input_ttl_seconds)
        grant = Grant(tenant_id, key_id, name)
        signature = self._sign(request_id, grant, expires)
        return f"{_b64(tenant_id.bytes)}.{_b64(key_id.bytes)}.{expires}.{_b64(name.encode())}.{_b64(signature)}"

    def grant_for(self, token: str, request_id: uuid.UUID, *, now: float | None = None) -> Grant | None:
        """What the token grants for this request, or None if it is forged, expired, for another or unbound."""
        parts = token.split(".")
        if len(parts) not in (4, 5) or len(token) > 400:
            return None
        expires = parse_digits(parts[2], maximum=MAX_EXPIRES)
        if expires is None:
            return None
        try:
            name = _unb64(parts[3]).decode() if len(parts) == 5 else None
            grant = Grant(uuid.UUID(bytes=_unb64(parts[0])), uuid.UUID(bytes=_unb64(parts[1])), name)
            signature = _unb64(parts[-1])
        except (ValueError, binascii.Error):  # UnicodeDecodeError is a ValueError
            return None
        if expires < (now if now is not None else time.time()):
            return None
        if not hmac.compare_digest(signature, self._sign(request_id, grant, expires)):
            return None
        return grant

    @staticmethod
    def unbound(token: str) -> bool:
        """A token of the form minted before tokens named their key (refused, with its own message)."""
        return token.count(".") == 2

    def _sign(self, request_id: uuid.UUID, grant: Grant, expires: int) -> bytes:
        scope = b"ackflow-events-v2|" if grant.input is None else b"ackflow-input-v1|" + grant.input.encode() + b"|"
        message = scope + request_id.bytes + grant.tenant_id.bytes + grant.key_id.bytes + str(expires).encode()
        return hmac.new(self._secret, message, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
