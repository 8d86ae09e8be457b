"""Tenants and their API keys. A key is shown once at creation and stored only as its SHA-256.

Keys look like `ak_<prefix>_<secret>`: the prefix is stored in clear so operators can tell keys
apart; the secret carries 256 random bits, so a fast hash is enough (no password stretching needed).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

import asyncpg

from ackflow.db.queries import sql

KEY_PREFIX = "ak_"


@dataclass(frozen=True)
class NewApiKey:
    """A freshly made key: `key` is the only copy of the secret there will ever be."""

    tenant_id: uuid.UUID
    prefix: str
    key: str


def hash_api_key(key: str) -> bytes:
    """What is stored and looked up for a key."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def generate_api_key() -> tuple[str, str]:
    """A new (prefix, key) pair."""
    prefix = secrets.token_hex(4)
    return prefix, f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


async def create_api_key(connection: asyncpg.Connection, tenant_id: uuid.UUID) -> NewApiKey:
    """Make and store a new key for the tenant."""
    prefix, key = generate_api_key()
    await connection.execute(sql("create_api_key"), uuid.uuid4(), tenant_id, prefix, hash_api_key(key))
    return NewApiKey(tenant_id, prefix, key)


async def create_tenant(connection: asyncpg.Connection, name: str) -> NewApiKey:
    """Create a tenant named `name` with its first API key."""
    async with connection.transaction():
        tenant_id = await connection.fetchval(sql("create_tenant"), uuid.uuid4(), name)
        return await create_api_key(connection, tenant_id)


async def ensure_tenant(connection: asyncpg.Connection, name: str) -> tuple[uuid.UUID, bool]:
    """The id of tenant `name`, creating it (without a key) if missing; True if it was created."""
    existing = await connection.fetchval(sql("tenant_by_name"), name)
    if existing is not None:
        return existing, False
    return await connection.fetchval(sql("create_tenant"), uuid.uuid4(), name), True
