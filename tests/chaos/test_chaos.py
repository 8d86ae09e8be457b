"""Nothing accepted is lost, nothing is recorded twice, every webhook arrives: under SIGKILL.

Each scenario starts its own Postgres, Redis and Temporal and the production roles as separate
`ackflow` processes (one gateway, two relays, two workers), registers a webhook endpoint for
`request.*` at a receiver that fails some first attempts and answers slowly, sends requests with
Idempotency-Key retries while processes are killed (see scenarios.py), waits until the stack
settles and asserts the invariants of ARCHITECTURE.md on what Postgres, the clients and the
receiver saw. One table line per scenario is printed at the end of the run.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx

from tests.chaos.audit import HEADER, diagnose, tally, wait_until_settled
from tests.chaos.load import LoadResult, send_load, submit_until_accepted
from tests.chaos.receiver import SigningReceiver, running_signing_receiver
from tests.chaos.scenarios import Scenario, inject_faults
from tests.chaos.stack import ChaosStack, running_stack
from tests.helpers import assert_eventually

GIVE_UP_AFTER_SECONDS = 90.0  # a client stops retrying one key after this long


async def test_every_accepted_request_ends_once_and_every_webhook_arrives_under_sigkill(
    scenario: Scenario, chaos_root: Path, chaos_table: list[str]
) -> None:
    started = time.monotonic()
    async with running_stack(chaos_root, dict(scenario.role_env)) as stack, running_signing_receiver() as receiver:
        tenant_id, api_key = create_tenant(stack, scenario.name)
        await register_endpoint(stack, api_key, receiver)
        await warm_up(stack, api_key)
        load, _ = await asyncio.gather(
            send_load(
                stack.base_url,
                api_key,
                prefix=scenario.name,
                count=scenario.requests,
                rate=scenario.rate,
                sleep_seconds=scenario.sleep_seconds,
                give_up_after=GIVE_UP_AFTER_SECONDS,
            ),
            inject_faults(stack, scenario),
        )
        stack.note(f"load sent: {len(load.accepted)} accepted, retries {dict(load.retried)}")
        settled = await wait_until_settled(stack.database_url, tenant_id, load, receiver, scenario.settle_seconds)
        stack.note("settled" if settled else f"not settled within {scenario.settle_seconds:.0f}s")
        stack.note(
            f"receiver: {sum(receiver.attempts.values())} attempts, {receiver.failed_on_purpose} failed on purpose,"
            f" {receiver.slow_answers} slow"
        )
        stack.note(
            f"logged: {stack.log_count('to its retry workflow failed')} failed webhook hand-offs,"
            f" {stack.log_count('dispatch of outbox row')} failed outbox dispatches"
        )
        result = await tally(scenario.name, stack.database_url, tenant_id, load, receiver)
        result.role_exits = sum(stack.unexpected_exits.values())
        result.seconds = time.monotonic() - started
        chaos_table.append(result.line())
        if stack.unexpected_exits:
            chaos_table.append(f"  {scenario.name}: roles that exited by themselves: {dict(stack.unexpected_exits)}")
        print(f"\n{HEADER}\n{result.line()}\n" + "\n".join(stack.timeline))
        violations = result.violations()
        if violations or load.rejected:
            details = await diagnose(stack.database_url, tenant_id, result)
            raise AssertionError(report(scenario, stack, load, receiver, violations, details))


def create_tenant(stack: ChaosStack, name: str) -> tuple[uuid.UUID, str]:
    """`ackflow tenant create`, as an operator does: the tenant's id and first API key."""
    output = stack.ackflow("tenant", "create", name).strip().splitlines()
    tenant_id = uuid.UUID(output[0].split("(id ")[1].rstrip(")"))
    return tenant_id, output[-1].split()[-1]


async def register_endpoint(stack: ChaosStack, api_key: str, receiver: SigningReceiver) -> None:
    """Subscribe the receiver to every request.* event through the API; it verifies with the secret."""
    async with httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {api_key}"}) as http:
        body = {"url": receiver.url(), "event_types": ["request.*"], "max_concurrency": 50}
        response = await http.post("/v1/webhooks", json=body)
        assert response.status_code == 201, response.text
        receiver.secret = response.json()["secret"]


async def warm_up(stack: ChaosStack, api_key: str) -> None:
    """One request to DONE before the load: the workers have registered their kinds and poll."""
    async with httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {api_key}"}) as http:
        first = LoadResult()
        body = {"kind": "echo", "payload": {"key": "warm-up"}}
        await submit_until_accepted(http, "warm-up", body, first, time.monotonic() + 60)
        assert first.accepted, f"the warm-up request was never accepted: {first.rejected} {dict(first.retried)}"

        async def done() -> bool:
            response = await http.get(f"/v1/requests/{first.accepted['warm-up']}")
            return response.status_code == 200 and response.json()["status"] == "DONE"

        await assert_eventually(done, timeout=60, interval=0.2, message="the warm-up request never reached DONE")


def report(
    scenario: Scenario,
    stack: ChaosStack,
    load: LoadResult,
    receiver: SigningReceiver,
    violations: list[str],
    details: str,
) -> str:
    """The failure message: what broke, what Postgres says, what happened when, where the logs are."""
    return "\n".join(
        [
            f"chaos scenario {scenario.name} broke {len(violations)} invariant(s):",
            *(f"  - {v}" for v in violations),
            *(f"  - answered {status} to key {key}: {body}" for key, status, body in load.rejected[:5]),
            details,
            f"clients: replayed {load.replayed}, retried {dict(load.retried)}",
            f"role exits restarted by the supervisor: {dict(stack.unexpected_exits)}",
            "timeline:",
            *(f"  {line}" for line in stack.timeline),
            f"logs and data kept in {stack.root}:",
            stack.log_tails(),
        ]
    )
