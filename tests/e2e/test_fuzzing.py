"""Property-based fuzzing of every route from the OpenAPI schema (schemathesis): no 5xx, and every
response matches the schema it documents. Bounded in examples and time."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx

from ackflow.settings import Settings
from tests.conftest import Tenant

SCHEMATHESIS = str(Path(sys.executable).parent / "st")


async def test_fuzzing_every_route_from_the_schema_finds_no_server_error_and_no_schema_mismatch(
    client: httpx.AsyncClient, settings: Settings, tenant: Tenant, tmp_path: Path
) -> None:
    await client.post("/v1/requests", json={"kind": "echo", "payload": {}})  # something to list
    base = f"http://127.0.0.1:{settings.http_port}"
    process = await asyncio.create_subprocess_exec(
        SCHEMATHESIS,
        "run",
        f"{base}/schema/openapi.json",
        "--header",
        f"Authorization: Bearer {tenant.api_key}",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--phases",
        "coverage,fuzzing",
        "--max-examples",
        "25",
        "--max-time",
        "60",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        # Streams stay open by design (the tenant stream never ends): they are fuzzed by hand elsewhere.
        "--exclude-path-regex",
        r"^/v1/events$|/ws$",
        "--seed",
        "20261127",
        "--suppress-health-check",
        "all",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=300)
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-6000:]
    assert "passed" in report and "Server error" not in report
