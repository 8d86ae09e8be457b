"""`pip install ackflow` alone, in a fresh venv: the client works, and no server package comes with it.

The project is copied (the files its build reads) and installed with its base dependencies from
the package index (pip's cache makes a second run quick); the client then talks to a loopback
server (client_alone.py). The `ackflow` command, which needs the server extras, says so in one line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from ackflow import devstack
from tests.e2e.test_cli import assert_one_line_error

ROOT = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_SECONDS = 300


def copy_project(target: Path) -> Path:
    """What the build reads: pyproject.toml, the readme, the license files and the packages."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project, packages = pyproject["project"], pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    target.mkdir()
    for name in ["pyproject.toml", project["readme"], *project["license-files"]]:
        shutil.copy(ROOT / name, target / name)
    for package in (pattern.rstrip("*") for pattern in packages):
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def run(
    command: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run outside this test run's environment: no PYTHONPATH or venv of ours leaks into the fresh one."""
    clean = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "DATABASE_URL"}}
    ours = str(Path(sys.executable).parent)  # nor this venv's binaries (the embedded servers) on PATH
    clean["PATH"] = os.pathsep.join(part for part in clean.get("PATH", "").split(os.pathsep) if part != ours)
    return subprocess.run(
        command, cwd=cwd, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def test_the_base_install_is_the_client_alone_and_the_command_names_the_server_extra(tmp_path: Path) -> None:
    source = copy_project(tmp_path / "ackflow-src")
    venv = tmp_path / "venv"
    created = run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    python, pip = str(venv / "bin" / "python"), [str(venv / "bin" / "python"), "-m", "pip"]
    installed = run(
        [*pip, "install", "--quiet", "--disable-pip-version-check", str(source)],
        cwd=tmp_path,
        timeout=INSTALL_TIMEOUT_SECONDS,
    )
    assert installed.returncode == 0, installed.stderr

    # -I: neither the working directory nor PYTHONPATH may hand it this checkout's ackflow.
    used = run([python, "-I", str(ROOT / "tests" / "e2e" / "client_alone.py")], cwd=tmp_path)
    assert used.returncode == 0 and used.stdout.strip().splitlines()[-1] == "ok", used.stderr
    where = run([python, "-I", "-c", "import ackflow; print(ackflow.__file__)"], cwd=tmp_path)
    assert where.stdout.startswith(str(venv)), where

    ackflow = str(venv / "bin" / "ackflow")
    database = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}  # never reached: the import fails first
    for command in (["migrate"], ["gateway"], ["tenant", "create", "acme"]):
        result = run([ackflow, *command], cwd=tmp_path, env=database)
        assert_one_line_error(result, f"`ackflow {command[0]}`", "pip install 'ackflow[server]'")
    state = str(tmp_path / "state")
    dev = run([ackflow, "dev", "--state-dir", state, "--port", str(devstack.free_port())], cwd=tmp_path)
    assert_one_line_error(dev, "pip install 'ackflow[dev]'")
