"""Migrations: versioned, applied once, safe when several processes start together."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from ackflow import devstack
from ackflow.db.migrate import available_migrations, migrate
from tests.conftest import TEMPLATE_DB, Servers


@pytest.fixture
async def empty_database_url(servers: Servers) -> AsyncIterator[str]:
    name = f"empty_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(devstack.postgres_url(servers.postgres_port, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield devstack.postgres_url(servers.postgres_port, name)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_migrations_run_concurrently_by_five_processes_apply_each_file_once(empty_database_url: str) -> None:
    connections = [await asyncpg.connect(empty_database_url) for _ in range(5)]
    try:
        applied = await asyncio.gather(*(migrate(c) for c in connections))
    finally:
        for connection in connections:
            await connection.close()

    shipped = available_migrations()
    assert sorted(len(a) for a in applied) == [0, 0, 0, 0, len(shipped)]
    check = await asyncpg.connect(empty_database_url)
    try:
        versions = [r["version"] for r in await check.fetch("SELECT version FROM ackflow_migrations ORDER BY 1")]
        rows = await check.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = {r["tablename"] for r in rows}
    finally:
        await check.close()
    assert versions == [m.version for m in shipped]
    assert {"tenants", "api_keys", "handler_kinds", "requests", "request_events", "outbox"} <= tables


async def test_migrating_an_up_to_date_database_changes_nothing(servers: Servers) -> None:
    connection = await asyncpg.connect(devstack.postgres_url(servers.postgres_port, TEMPLATE_DB))
    try:
        assert await migrate(connection) == []
    finally:
        await connection.close()


def test_migration_files_are_numbered_without_gaps() -> None:
    versions = [m.version for m in available_migrations()]
    assert versions == list(range(1, len(versions) + 1))
