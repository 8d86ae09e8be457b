"""Structured logs: one JSON object a line from the production roles, with the request's context, and
never a secret; text for the commands a person reads."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis
from temporalio.client import Client

from ackflow.cli import _parser
from ackflow.handlers import HandlerRegistry
from ackflow.logs import configure_logging, log_context
from ackflow.settings import Settings
from tests.conftest import Tenant, api_client, running_roles
from tests.e2e.test_cli import ACKFLOW
from tests.helpers import wait_for_status

WEBHOOK_SECRET = "whsec_" + "A" * 43 + "="
DATABASE_PASSWORD = "hunter2-db-password"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Where the tests' configure_logging writes; the root logger is restored after."""
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_the_roles_default_to_json_and_the_commands_for_people_to_text() -> None:
    parser = _parser()
    for role in ("gateway", "relay", "worker"):
        assert parser.parse_args([role]).log_format == "json", role
    for command in (["dev"], ["migrate"], ["tenant", "create", "x"], ["outbox"]):
        assert getattr(parser.parse_args(command), "log_format", "text") == "text", command


def test_a_json_line_has_time_level_logger_message_context_and_trace_id(captured: io.StringIO) -> None:
    configure_logging(Settings(), default_format="json", stream=captured)
    tracer = TracerProvider().get_tracer("tests")
    with log_context(request_id="0190-abc", tenant="t-1"), tracer.start_as_current_span("work") as span:
        logging.getLogger("ackflow.test").warning("went %s", "wrong")
    logging.getLogger("ackflow.test").warning("outside")
    inside, outside = json_lines(captured)
    assert inside["time"].endswith("Z") and "T" in inside["time"]
    assert (inside["level"], inside["logger"], inside["message"]) == ("WARNING", "ackflow.test", "went wrong")
    assert (inside["request_id"], inside["tenant"]) == ("0190-abc", "t-1")
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert len(inside["trace_id"]) == 32
    assert not {"request_id", "tenant", "trace_id"} & outside.keys()


def test_no_secret_reaches_a_json_line_even_in_exception_text(captured: io.StringIO) -> None:
    configure_logging(Settings(log_format="json"), default_format="text", stream=captured)
    api_key = "ak_1a2b3c4d_" + "s3cr3t" * 7
    url = f"postgresql://ackflow:{DATABASE_PASSWORD}@db.internal:5432/ackflow"
    log = logging.getLogger("ackflow.test")
    log.error("key %s secret %s url %s", api_key, WEBHOOK_SECRET, url)
    try:
        raise ConnectionError(f"cannot reach {url} with {api_key} signing with {WEBHOOK_SECRET}")
    except ConnectionError:
        log.exception("failed")
    text = captured.getvalue()
    lines = json_lines(captured)
    assert len(lines) == 2 and "ConnectionError" in lines[1]["exc_info"]
    for secret in ("s3cr3t", WEBHOOK_SECRET.removeprefix("whsec_"), DATABASE_PASSWORD):
        assert secret not in text, f"{secret} reached the log: {text}"
    assert "ak_1a2b3c4d_…" in lines[0]["message"] and "db.internal:5432" in lines[0]["message"]


def test_text_lines_carry_the_context_too(captured: io.StringIO) -> None:
    configure_logging(Settings(), default_format="text", stream=captured)
    with log_context(request_id="r-1"):
        logging.getLogger("ackflow.test").warning("plain")
    line = captured.getvalue().strip()
    assert line.endswith("WARNING ackflow.test: plain [request_id=r-1]"), line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


async def test_a_handlers_log_line_in_the_worker_names_its_request_tenant_and_kind(
    captured: io.StringIO,
    settings: Settings,
    pool: asyncpg.Pool,
    redis: Redis,
    temporal: Client,
    registry: HandlerRegistry,
    tenant: Tenant,
) -> None:
    configure_logging(settings, default_format="json", stream=captured)
    async with running_roles(settings, pool, redis, temporal, registry), api_client(settings, tenant.api_key) as http:
        accepted = await _submit(http, {"note": f"with {tenant.api_key}"})
        await wait_for_status(http, accepted["id"], {"FAILED"})
    mine = [line for line in json_lines(captured) if line.get("logger") == "tests.handlers"]
    assert len(mine) == 1, captured.getvalue()
    assert mine[0]["request_id"] == accepted["id"]
    assert mine[0]["tenant"] == str(tenant.id)
    assert mine[0]["kind"] == "log_line"
    assert tenant.api_key not in captured.getvalue()


async def _submit(http: httpx.AsyncClient, payload: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/v1/requests", json={"kind": "log_line", "payload": payload})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_the_relay_run_as_a_process_logs_json_lines_without_the_database_password(settings: Settings) -> None:
    # The test Postgres trusts local connections, so a password in the URL is accepted and ignored.
    url = settings.database_url.replace("postgres@", f"postgres:{DATABASE_PASSWORD}@", 1)
    assert DATABASE_PASSWORD in url
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": settings.redis_url,
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "ACKFLOW_TASK_QUEUE": settings.task_queue,
    }
    process = await asyncio.create_subprocess_exec(ACKFLOW, "relay", env=env, stderr=asyncio.subprocess.PIPE)
    assert process.stderr is not None
    try:
        first = (await asyncio.wait_for(process.stderr.readline(), timeout=30)).decode()
    finally:
        process.send_signal(signal.SIGTERM)
        _, remaining = await asyncio.wait_for(process.communicate(), timeout=30)
    rest = remaining.decode()
    lines = [line for line in (first + rest).splitlines() if line.strip()]
    assert process.returncode == 0 and lines, first + rest
    records = [json.loads(line) for line in lines]  # every line one JSON object
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records), records
    assert any(record["logger"] == "ackflow.db.retention" for record in records), records
    assert DATABASE_PASSWORD not in first + rest
