"""`ackflow status`: each stage's figures from Postgres, as text and as JSON, run as the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg

from ackflow.db.accept import accept_request
from ackflow.handlers import HandlerRegistry
from ackflow.ids import new_request_id
from ackflow.settings import Settings
from activities.worker import register_kinds
from tests.conftest import Tenant

ROOT = Path(__file__).resolve().parents[2]


def ackflow_status(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        "DATABASE_URL": settings.database_url,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "ackflow.cli", "status", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_status_prints_the_backlog_waiting_in_the_outbox_as_text_and_json(
    settings: Settings, pool: asyncpg.Pool, registry: HandlerRegistry, tenant: Tenant
) -> None:
    await register_kinds(pool, registry, settings.task_queue)
    for n in range(3):  # accepted while no relay runs: they wait in the outbox for admission
        assert await accept_request(pool, new_request_id(), tenant.id, "echo", {"n": n}) is not None
    await pool.execute(
        "INSERT INTO outbox (topic, tenant_id, request_id, dead_at) VALUES ('request.done', $1, $2, now())",
        tenant.id,
        uuid.uuid4(),
    )

    text = ackflow_status(settings)
    as_json = ackflow_status(settings, "--json")

    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert any(line.split()[:3] == ["request.accepted", "3", "rows"] for line in lines), text.stdout
    assert any(line.split() == ["acme", "3"] for line in lines), text.stdout
    assert any(line.split()[:3] == ["waiting", "admission", "3"] for line in lines), text.stdout
    assert any(line.split() == ["dead", "letters", "1"] for line in lines), text.stdout
    assert any(line.split() == ["deliveries", "failed", "0"] for line in lines), text.stdout
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["outbox"]["request.accepted"]["rows"] == 3
    assert document["outbox"]["request.accepted"]["oldest_age_seconds"] >= 0
    assert document["waiting_admission"] == {"acme": 3}
    assert document["in_flight"] == {}
    assert document["dead_letters"] == 1
    assert document["deliveries"]["pending"] == 0 and document["endpoints_disabled"] == 0
