"""`ackflow dev`: the whole stack in one command, stopped cleanly, restarted with its data."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from ackflow import devstack

ACKFLOW = str(Path(sys.executable).parent / "ackflow")
BOOT_TIMEOUT = 120.0


def start_dev(state_dir: Path, port: int, *, output: Path | None = None) -> subprocess.Popen[str]:
    """`ackflow dev` as a user runs it; its output goes to `output` (a file, so it can never block) or a pipe."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "TEMPORAL_ADDRESS"}}
    argv = [ACKFLOW, "dev", "--state-dir", str(state_dir), "--port", str(port)]
    if output is None:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    with open(output, "w") as sink:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(argv, stdout=sink, stderr=sink, text=True, env=env)


def wait_for_dev_json(state_dir: Path, process: subprocess.Popen[str]) -> dict[str, str]:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"ackflow dev exited early with code {process.returncode}")
        path = state_dir / "dev.json"
        if path.exists():
            info: dict[str, str] = json.loads(path.read_text())
            with httpx.Client(base_url=info["api_url"]) as http:
                try:
                    if http.get("/health/ready").status_code == 200:
                        return info
                except httpx.TransportError:
                    pass
        time.sleep(0.2)
    raise AssertionError("ackflow dev did not come up")


def stop_dev(process: subprocess.Popen[str]) -> float:
    """SIGTERM, and how long it took to exit."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)
    return time.monotonic() - started


def run_to_done(info: dict[str, str], kind: str = "echo") -> dict[str, object]:
    headers = {"Authorization": f"Bearer {info['api_key']}"}
    with httpx.Client(base_url=info["api_url"], headers=headers, timeout=10) as http:
        accepted = http.post("/v1/requests", json={"kind": kind, "payload": {"from": "dev"}})
        assert accepted.status_code == 202, accepted.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state: dict[str, object] = http.get(accepted.headers["location"]).json()
            if state["status"] == "DONE":
                return state
            time.sleep(0.1)
    raise AssertionError("request never finished")


@pytest.fixture
def dev_process(server_dir: Path) -> Iterator[tuple[subprocess.Popen[str], Path, int]]:
    port = devstack.free_port()
    process = start_dev(server_dir / "state", port, output=server_dir / "dev.log")
    yield process, server_dir / "state", port
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_dev_runs_the_stack_stops_within_10s_and_restarts_with_its_data(
    dev_process: tuple[subprocess.Popen[str], Path, int],
) -> None:
    process, state_dir, port = dev_process
    info = wait_for_dev_json(state_dir, process)
    assert set(info) >= {"api_url", "temporal_ui_url", "api_key", "database_url", "redis_url", "temporal_address"}
    assert info["api_url"] == f"http://127.0.0.1:{port}"
    done = run_to_done(info)
    assert done["result"] == {"from": "dev"}
    assert httpx.get(info["temporal_ui_url"], timeout=10).status_code == 200
    assert httpx.get(f"{info['api_url']}/schema/openapi.json").json()["info"]["title"] == "ackflow"

    second = start_dev(state_dir, devstack.free_port())
    _, err = second.communicate(timeout=60)
    assert second.returncode == 1
    assert err.strip().count("\n") == 0 and "already using" in err

    children = psutil.Process(process.pid).children(recursive=True)
    assert len(children) >= 3, "Postgres, Redis and Temporal should be children of ackflow dev"
    assert stop_dev(process) < 10
    _, still_alive = psutil.wait_procs(children, timeout=5)
    assert still_alive == [], f"left behind: {still_alive}"
    assert not (state_dir / "dev.json").exists()

    again = start_dev(state_dir, port, output=state_dir.parent / "dev-again.log")
    try:
        info_again = wait_for_dev_json(state_dir, again)
        assert info_again["api_key"] == info["api_key"], "the dev tenant and its key survive a restart"
        headers = {"Authorization": f"Bearer {info['api_key']}"}
        kept = httpx.get(f"{info_again['api_url']}/v1/requests/{done['id']}", headers=headers).json()
        assert kept["status"] == "DONE" and kept["result"] == {"from": "dev"}
    finally:
        stop_dev(again)


def test_dev_refuses_a_taken_port_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start_dev(tmp_path / "state", port)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert err.strip().count("\n") == 0, err
    assert f"port {port}" in err and "already in use" in err
