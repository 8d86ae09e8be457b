"""API-key authentication: `Authorization: Bearer <key>` -> the caller's tenant.

Implemented as a guard so it runs before the body is read: an unauthenticated caller learns
nothing from validation errors. Lookups are cached for a couple of seconds per gateway to keep the
accept path at one SQL statement; `ackflow key revoke` announces a revocation on Redis, so every
gateway forgets the key at once (and within the cache window if Redis is down).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import asyncpg
from litestar.channels import ChannelsPlugin
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from ackflow.db.queries import sql
from ackflow.errors import Unauthorized
from ackflow.live import REVOKED_KEYS_CHANNEL
from ackflow.tenants import KEY_PREFIX, hash_api_key
from gateway.hub import RESYNC, StreamSubscriber

MAX_KEY_LENGTH = 256


class ApiKeyAuthenticator:
    """Resolves API keys to tenant ids, with a short positive cache."""

    def __init__(self, pool: asyncpg.Pool, cache_seconds: float) -> None:
        self._pool = pool
        self._cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[uuid.UUID, float]] = {}

    def forget(self, key_hash: bytes | None = None) -> None:
        """Drop one cached key (revoked), or every cached key (revocations may have been missed)."""
        if key_hash is None:
            self._cache.clear()
        else:
            self._cache.pop(key_hash, None)

    async def follow_revocations(self, channels: ChannelsPlugin) -> None:
        """Forget revoked keys as soon as `ackflow key revoke` announces them, on every gateway."""
        async with channels.start_subscription(REVOKED_KEYS_CHANNEL) as subscriber:
            assert isinstance(subscriber, StreamSubscriber)
            while True:
                message = await subscriber.next_message(60.0)
                if message == RESYNC:
                    self.forget()
                elif message:
                    with contextlib.suppress(ValueError):
                        self.forget(bytes.fromhex(message.decode()))

    async def tenant_for(self, authorization: str | None) -> uuid.UUID:
        key = _bearer_key(authorization)
        digest = hash_api_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        tenant_id: uuid.UUID | None = await self._pool.fetchval(sql("tenant_for_key"), digest)
        if tenant_id is None:
            raise Unauthorized("the API key is not valid (unknown or revoked)")
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (tenant_id, now + self._cache_seconds)
        return tenant_id


def _bearer_key(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("send your API key as `Authorization: Bearer <key>`")
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized("the Authorization header must be `Bearer <key>`")
    if len(key) > MAX_KEY_LENGTH or not key.startswith(KEY_PREFIX) or not key.isascii():
        raise Unauthorized("the API key is not valid (unknown or revoked)")
    return key


async def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for every /v1 route: authenticate and remember the tenant on the connection."""
    authenticator: ApiKeyAuthenticator = connection.app.state.authenticator
    connection.state.tenant_id = await authenticator.tenant_for(connection.headers.get("authorization"))


def current_tenant(connection: ASGIConnection[Any, Any, Any, Any]) -> uuid.UUID:
    """The tenant the guard authenticated for this request or socket."""
    tenant_id: uuid.UUID = connection.state.tenant_id
    return tenant_id


async def require_key_or_capability(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for one request's streams: the API key, or that request's capability token (`?token=`).

    Browsers' EventSource and WebSocket cannot send headers; the token opens this request only.
    """
    token = connection.query_params.get("token")
    if token is None:
        await require_api_key(connection, _)
        return
    request_id = connection.path_params.get("request_id")
    tokens = connection.app.state.services.capability_tokens
    tenant_id = tokens.tenant_for(token, request_id) if isinstance(request_id, uuid.UUID) else None
    if tenant_id is None:
        raise Unauthorized("the token is not valid for this request (forged, expired or for another request)")
    connection.state.tenant_id = tenant_id
