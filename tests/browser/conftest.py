"""Fixtures for browser tests: Debian's Chromium, driven headless by Playwright.

Playwright cannot download its own browsers here, so the tests use Debian's Chromium at
/usr/bin/chromium. When it is missing and the tests run as root on a system with apt-get (as in
CI), the first test that needs it installs it; elsewhere those tests are skipped with a hint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = (
    "install it with `sudo apt-get install chromium` (Debian/Ubuntu); as root the tests install it themselves"
)

# Flags for a root, screenless machine with a closed network: without the background-networking
# ones Chromium keeps trying to reach Google's hosts. Playwright adds --headless and its own
# --user-data-dir.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

APT_UPDATE_TIMEOUT = 300.0
APT_INSTALL_TIMEOUT = 900.0
APT_LOCK_WAIT = 300.0  # how long to wait for another apt/dpkg run to release apt's own lock
_LOCK_FILE = Path(tempfile.gettempdir()) / "ackflow-chromium-install.lock"
_APT_LOCK_MESSAGES = ("Could not get lock", "Unable to acquire the dpkg frontend lock", "Unable to lock directory")


class ChromiumInstallError(RuntimeError):
    """apt-get failed or timed out while installing Chromium for the browser tests."""


def _can_install() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0 and shutil.which("apt-get") is not None


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path`, so concurrent pytest processes install one at a time."""
    import fcntl  # POSIX only; only reached where apt-get exists

    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str], timeout: float) -> tuple[int, str]:
    """Run `command` in its own process group, output captured; on timeout kill the whole group."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise ChromiumInstallError(
            f"`{' '.join(command)}` did not finish within {timeout:.0f}s (killed; if dpkg was interrupted, "
            f"run `dpkg --configure -a`); last output:\n{_tail(output)}"
        ) from None
    return process.returncode, output


def _tail(output: str, lines: int = 20) -> str:
    return "\n".join(output.rstrip().splitlines()[-lines:]) or "(no output)"


def _apt_get(args: list[str], timeout: float) -> None:
    """Run apt-get, retrying while another apt or dpkg run holds apt's lock."""
    command = ["apt-get", *args]
    deadline = time.monotonic() + APT_LOCK_WAIT
    while True:
        returncode, output = _run(command, timeout)
        if returncode == 0:
            return
        if any(message in output for message in _APT_LOCK_MESSAGES) and time.monotonic() < deadline:
            time.sleep(5)
            continue
        raise ChromiumInstallError(f"`{' '.join(command)}` failed with exit code {returncode}:\n{_tail(output)}")


def install_chromium() -> None:
    """Install Debian's chromium with apt-get, unless another process already did."""
    with _exclusive_lock(_LOCK_FILE):
        if CHROMIUM.exists():
            return
        _apt_get(["update"], APT_UPDATE_TIMEOUT)
        _apt_get(["install", "-y", "--no-install-recommends", "chromium"], APT_INSTALL_TIMEOUT)
    if not CHROMIUM.exists():
        raise ChromiumInstallError(f"apt-get installed chromium, but {CHROMIUM} does not exist")


@pytest.fixture(scope="session")
def chromium_executable(pytestconfig: pytest.Config) -> str:
    """Path of Debian's Chromium, installed with apt-get on first use when we are root."""
    if not CHROMIUM.exists():
        if not _can_install():
            pytest.skip(f"browser tests need Chromium at {CHROMIUM}: {INSTALL_HINT}")
        reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("installing Debian's chromium with apt-get for the browser tests (first run only)")
        install_chromium()
    return str(CHROMIUM)


@pytest.fixture
async def browser_page(chromium_executable: str) -> AsyncIterator[Page]:
    """A fresh page in a fresh headless Chromium, all closed after the test."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = await browser.new_context()
            try:
                yield await context.new_page()
            finally:
                await context.close()
        finally:
            await browser.close()
