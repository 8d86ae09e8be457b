"""API-key authentication: `Authorization: Bearer <key>` -> the caller's tenant.

Implemented as a guard so it runs before the body is read: an unauthenticated caller learns
nothing from validation errors. Lookups are cached for a couple of seconds per gateway to keep the
accept path at one SQL statement; `ackflow key revoke` announces a revocation on Redis, so every
gateway forgets the key at once (and within the cache window if Redis is down), and ends the
streams opened with it (gateway/open_streams.py). A capability token names the key that minted it
and is honoured only while that key is active, checked through the same kind of cache.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from ackflow.db.pool import POSTGRES_ERRORS
from ackflow.db.queries import sql
from ackflow.errors import Unauthorized
from ackflow.live import REVOKED_KEYS_CHANNEL
from ackflow.logs import bind_log_context
from ackflow.tenants import KEY_PREFIX, hash_api_key
from gateway.hub import RESYNC, Hub, Resync

MAX_KEY_LENGTH = 256

log = logging.getLogger(__name__)


class ApiKeyAuthenticator:
    """Resolves API keys to (tenant, key id), and key ids to their tenant while active, with a short cache."""

    def __init__(self, pool: asyncpg.Pool, cache_seconds: float) -> None:
        self._pool = pool
        self._cache_seconds = cache_seconds
        self._cache: dict[bytes, tuple[uuid.UUID, uuid.UUID, float]] = {}
        self._active: dict[uuid.UUID, tuple[uuid.UUID, float]] = {}  # key id -> tenant, for capability tokens
        self._names: dict[uuid.UUID, str] = {}  # tenant id -> name, for metrics' labels (as many as tenants)

    def forget(self, key_hash: bytes | None = None) -> None:
        """Drop one cached key (revoked), or every cached key (revocations may have been missed).

        Key ids are cached for capability tokens without their hash, so all of those go either way.
        """
        self._active.clear()
        if key_hash is None:
            self._cache.clear()
        else:
            self._cache.pop(key_hash, None)

    async def follow_revocations(self, hub: Hub, on_revocation: Callable[[], Awaitable[None]] | None = None) -> None:
        """Forget revoked keys as soon as `ackflow key revoke` announces them, on every gateway, and
        call `on_revocation` (which ends the streams of revoked keys). After a RESYNC or an overflow
        (announcements were missed, e.g. while `on_revocation` waited on Postgres) every cached key
        is forgotten."""
        async with hub.subscribe(REVOKED_KEYS_CHANNEL) as subscription:
            while True:
                message = await subscription.next(60.0)
                if subscription.overflowed:  # what was dropped is covered by forgetting every key
                    subscription.clear_overflow()
                    message = RESYNC
                if message is None:
                    continue
                if isinstance(message, Resync):
                    self.forget()
                else:
                    with contextlib.suppress(ValueError):
                        self.forget(bytes.fromhex(message.decode()))
                if on_revocation is not None:
                    try:
                        await on_revocation()
                    except POSTGRES_ERRORS as exc:
                        log.warning("could not end the streams of a revoked key now (%s); the re-check will", exc)

    async def authenticate(self, authorization: str | None) -> tuple[uuid.UUID, uuid.UUID]:
        """The (tenant id, key id) of the `Authorization` header's key, or Unauthorized."""
        key = _bearer_key(authorization)
        digest = hash_api_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[2] > now:
            return cached[0], cached[1]
        row = await self._pool.fetchrow(sql("tenant_for_key"), digest)
        if row is None:
            raise Unauthorized("the API key is not valid (unknown or revoked)")
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (row["tenant_id"], row["id"], now + self._cache_seconds)
        self._names[row["tenant_id"]] = row["name"]
        return row["tenant_id"], row["id"]

    def tenant_name(self, tenant_id: uuid.UUID) -> str | None:
        """The name of a tenant whose key this gateway authenticated (None for any other)."""
        return self._names.get(tenant_id)

    async def active_key_tenant(self, key_id: uuid.UUID) -> uuid.UUID | None:
        """The tenant of key `key_id` if it is still active, else None (cached like keys)."""
        now = time.monotonic()
        cached = self._active.get(key_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        tenant_id: uuid.UUID | None = await self._pool.fetchval(sql("active_key_tenant"), key_id)
        if tenant_id is not None:
            if len(self._active) > 10_000:
                self._active.clear()
            self._active[key_id] = (tenant_id, now + self._cache_seconds)
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
    """Guard for every /v1 route: authenticate and remember the tenant and key on the connection."""
    authenticator: ApiKeyAuthenticator = connection.app.state.authenticator
    tenant_id, key_id = await authenticator.authenticate(connection.headers.get("authorization"))
    connection.state.tenant_id, connection.state.key_id = tenant_id, key_id
    bind_log_context(tenant=tenant_id)  # each HTTP request or socket is a task of its own: this ends with it


def current_tenant(connection: ASGIConnection[Any, Any, Any, Any]) -> uuid.UUID:
    """The tenant the guard authenticated for this request or socket."""
    tenant_id: uuid.UUID = connection.state.tenant_id
    return tenant_id


def current_key(connection: ASGIConnection[Any, Any, Any, Any]) -> uuid.UUID:
    """The id of the API key the guard authenticated (directly, or the one that minted the token)."""
    key_id: uuid.UUID = connection.state.key_id
    return key_id


async def require_key_or_capability(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for one request's streams: the API key, or that request's capability token (`?token=`).

    Browsers' EventSource and WebSocket cannot send headers; the token opens this request only, and
    only while the key that minted it is active.
    """
    await _key_or_token(connection, _, for_input=False)


async def require_key_or_input_capability(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for delivering a waiting request's input: the API key, or a token for that request and one
    input name (`?token=`, from `links.input`), which the handler finds in `granted_input()`."""
    await _key_or_token(connection, _, for_input=True)


def granted_input(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The one input name the caller's token may deliver; None when the caller used the API key."""
    name: str | None = getattr(connection.state, "granted_input", None)
    return name


async def _key_or_token(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler, *, for_input: bool
) -> None:
    token = connection.query_params.get("token")
    if token is None:
        await require_api_key(connection, handler)
        return
    tokens = connection.app.state.services.capability_tokens
    if tokens.unbound(token):
        raise Unauthorized(
            "this capability URL predates tokens bound to their API key and is no longer accepted: "
            "submit the request again or open the stream with the API key"
        )
    request_id = connection.path_params.get("request_id")
    grant = tokens.grant_for(token, request_id) if isinstance(request_id, uuid.UUID) else None
    if grant is None or (grant.input is not None) != for_input:
        what = "this request's input" if for_input else "this request's events"
        raise Unauthorized(f"the token is not valid for {what} (forged, expired, for another request or purpose)")
    authenticator: ApiKeyAuthenticator = connection.app.state.authenticator
    if await authenticator.active_key_tenant(grant.key_id) != grant.tenant_id:
        raise Unauthorized("the token is no longer valid: the API key that issued it was revoked")
    connection.state.tenant_id, connection.state.key_id = grant.tenant_id, grant.key_id
    connection.state.granted_input = grant.input
    bind_log_context(tenant=grant.tenant_id)
