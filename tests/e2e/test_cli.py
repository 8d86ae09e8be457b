"""The `ackflow` command's production roles: configured by env vars, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from ackflow import devstack
from ackflow.tenants import hash_api_key
from tests.conftest import Servers

ACKFLOW = str(Path(sys.executable).parent / "ackflow")


def run_ackflow(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "TEMPORAL_ADDRESS"}}
    return subprocess.run([ACKFLOW, *args], env={**clean, **env}, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {result.stderr}"
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_a_role_without_database_url_says_which_variable_to_set() -> None:
    for role in ("gateway", "relay", "worker", "migrate"):
        assert_one_line_error(run_ackflow(role, env={}), "DATABASE_URL is not set")


def test_a_malformed_setting_names_the_variable() -> None:
    result = run_ackflow("gateway", env={"DATABASE_URL": "mysql://x", "REDIS_URL": "redis://localhost"})
    assert_one_line_error(result, "DATABASE_URL", "postgresql://")
    result = run_ackflow("migrate", env={"DATABASE_URL": "postgresql://x/y", "ACKFLOW_PORT": "eighty"})
    assert_one_line_error(result, "ACKFLOW_PORT")


def test_unreachable_postgres_names_the_variable_and_address_but_not_the_password() -> None:
    port = devstack.free_port()
    url = f"postgresql://app:hunter2@127.0.0.1:{port}/ackflow"
    line = assert_one_line_error(run_ackflow("migrate", env={"DATABASE_URL": url}), "DATABASE_URL", f"127.0.0.1:{port}")
    assert "hunter2" not in line


def test_unreachable_temporal_names_the_variable_and_address(servers: Servers) -> None:
    port = devstack.free_port()
    env = {
        "DATABASE_URL": devstack.postgres_url(servers.postgres_port, "ackflow_template"),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "ACKFLOW_HANDLERS": "activities.examples",
        "ACKFLOW_CONNECT_TIMEOUT_SECONDS": "3",
    }
    assert_one_line_error(run_ackflow("worker", env=env), "TEMPORAL_ADDRESS", f"127.0.0.1:{port}")


def test_worker_with_an_unimportable_handler_module_says_so() -> None:
    env = {"DATABASE_URL": "postgresql://x/y", "ACKFLOW_HANDLERS": "no_such_module_here"}
    assert_one_line_error(run_ackflow("worker", env=env), "ACKFLOW_HANDLERS", "no_such_module_here")


async def test_migrate_then_tenant_create_prints_a_key_that_is_stored_hashed(servers: Servers) -> None:
    url = devstack.create_database(servers.postgres_port, "cli_tenant_test")
    first = run_ackflow("migrate", env={"DATABASE_URL": url})
    second = run_ackflow("migrate", env={"DATABASE_URL": url})
    assert first.returncode == 0 and "0001_initial" in first.stdout
    assert second.returncode == 0 and "up to date" in second.stdout

    created = run_ackflow("tenant", "create", "initech", env={"DATABASE_URL": url})
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1].split()[-1]
    assert key.startswith("ak_")
    duplicate = run_ackflow("tenant", "create", "initech", env={"DATABASE_URL": url})
    assert_one_line_error(duplicate, "already exists")

    connection = await asyncpg.connect(url)
    try:
        stored = await connection.fetchrow("SELECT key_hash, prefix FROM api_keys")
    finally:
        await connection.close()
    assert stored["key_hash"] == hash_api_key(key)
    assert key.encode() not in bytes(stored["key_hash"]) and key.startswith(f"ak_{stored['prefix']}_")


async def test_tenant_set_rate_and_set_weight_store_the_limits_and_refuse_an_unknown_tenant(servers: Servers) -> None:
    env = {"DATABASE_URL": devstack.create_database(servers.postgres_port, "cli_tenant_limits")}
    assert run_ackflow("migrate", env=env).returncode == 0
    assert run_ackflow("tenant", "create", "hooli", env=env).returncode == 0

    rate = run_ackflow("tenant", "set-rate", "hooli", "200", env=env)
    weight = run_ackflow("tenant", "set-weight", "hooli", "3", env=env)
    assert rate.returncode == 0 and "200 requests a second" in rate.stdout, rate
    assert weight.returncode == 0 and "admission weight 3" in weight.stdout, weight
    assert_one_line_error(run_ackflow("tenant", "set-rate", "nobody", "5", env=env), "no tenant is named 'nobody'")
    assert_one_line_error(run_ackflow("tenant", "set-weight", "nobody", "2", env=env), "no tenant is named 'nobody'")
    assert_one_line_error(run_ackflow("tenant", "set-rate", "hooli", "-1", env=env), "the rate must be 0")

    connection = await asyncpg.connect(env["DATABASE_URL"])
    try:
        stored = await connection.fetchrow("SELECT accept_rate_per_second, admission_weight FROM tenants")
    finally:
        await connection.close()
    assert (stored["accept_rate_per_second"], stored["admission_weight"]) == (200, 3)


def test_production_roles_in_separate_processes_take_a_request_to_done(servers: Servers, tmp_path: Path) -> None:
    import time
    import uuid

    import httpx

    url = devstack.create_database(servers.postgres_port, f"roles_{uuid.uuid4().hex[:8]}")
    port = devstack.free_port()
    env = {
        "DATABASE_URL": url,
        "REDIS_URL": devstack.redis_url(servers.redis_port),
        "TEMPORAL_ADDRESS": servers.temporal_address,
        "ACKFLOW_TASK_QUEUE": f"roles-{uuid.uuid4().hex[:8]}",
        "ACKFLOW_HANDLERS": "activities.examples",
        "ACKFLOW_PORT": str(port),
    }
    assert run_ackflow("migrate", env=env).returncode == 0
    key = run_ackflow("tenant", "create", "umbrella", env=env).stdout.strip().splitlines()[-1].split()[-1]
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "TEMPORAL_ADDRESS"}}
    roles = []
    for role in ("worker", "relay", "gateway"):
        with open(tmp_path / f"{role}.log", "w") as log:
            roles.append(subprocess.Popen([ACKFLOW, role], env={**clean, **env}, stdout=log, stderr=log))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}) as http:
            deadline = time.monotonic() + 60
            accepted = None
            while accepted is None or accepted.status_code != 202:
                assert time.monotonic() < deadline, "gateway or worker never became ready"
                time.sleep(0.2)
                try:  # 422 until the worker has registered its kinds; connection refused until the gateway binds
                    accepted = http.post("/v1/requests", json={"kind": "echo", "payload": {"role": "separate"}})
                except httpx.TransportError:
                    continue
            while (state := http.get(accepted.headers["location"]).json())["status"] != "DONE":
                assert time.monotonic() < deadline, f"request stuck at {state['status']}"
                time.sleep(0.1)
        assert state["result"] == {"role": "separate"}
    finally:
        for process in roles:
            process.terminate()
        exit_codes = [process.wait(timeout=15) for process in roles]
    assert exit_codes == [0, 0, 0], "every role stops cleanly on SIGTERM"
