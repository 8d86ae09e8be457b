"""GET /v1/kinds: what a client may submit, as the workers registered it."""

from __future__ import annotations

import httpx
import pytest

from ackflow.settings import Settings

pytestmark = pytest.mark.usefixtures("stack")


async def test_kinds_lists_every_kind_a_worker_registered_with_its_options(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/v1/kinds")

    assert response.status_code == 200
    kinds = {item["kind"]: item for item in response.json()["items"]}
    assert {"echo", "fail", "sleep"} <= set(kinds)
    echo = kinds["echo"]
    assert echo["task_queue"] == settings.task_queue
    assert echo["registered_at"].endswith("Z")
    options = echo["options"]
    assert options["max_attempts"] >= 1 and options["start_to_close_seconds"] > 0
    assert list(kinds) == sorted(kinds), "listed by name"


async def test_every_listed_kind_is_accepted(client: httpx.AsyncClient) -> None:
    listed = [item["kind"] for item in (await client.get("/v1/kinds")).json()["items"]]
    answer = await client.post("/v1/requests", json={"kind": listed[0], "payload": {}})
    assert answer.status_code == 202
    await client.post(f"/v1/requests/{answer.json()['id']}/cancel")
