"""Concurrent clients that submit requests with an Idempotency-Key and retry until accepted.

A client retries the same key and body on a connection error, a timeout, a 5xx, a 409 (the first
attempt is still being written) or a 429, with backoff, until it gets a 202 (first or replayed)
or its deadline passes. Everything it saw is kept, so the audit can compare it with Postgres.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx

CLIENTS = 16
HTTP_TIMEOUT_SECONDS = 10.0


@dataclass
class LoadResult:
    """What the clients saw: the id each key was accepted as, and every answer that was not a 202."""

    accepted: dict[str, str] = field(default_factory=dict)  # idempotency key -> request id
    ids_per_key: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    replayed: int = 0
    retried: Counter[str] = field(default_factory=Counter)  # why a client retried, by status or error
    rejected: list[tuple[str, int, str]] = field(default_factory=list)  # key, status, body: a 4xx
    unaccepted: list[str] = field(default_factory=list)  # keys still not accepted at the deadline

    def keys_with_two_ids(self) -> list[str]:
        return sorted(key for key, ids in self.ids_per_key.items() if len(ids) > 1)


def request_body(index: int, key: str, sleep_seconds: float) -> dict[str, Any]:
    """Half echo, one in ten failing, four in ten sleeping up to `sleep_seconds` (a quarter, half,
    three quarters or all of it): every terminal path is exercised, and work is under way (and
    finishes, spread out) while a fault lasts."""
    if index % 10 == 7:
        return {"kind": "fail", "payload": {"key": key, "message": "failed on purpose"}}
    if index % 10 in (1, 3, 5, 9):
        return {"kind": "sleep", "payload": {"key": key, "seconds": sleep_seconds * (1 + index // 10 % 4) / 4}}
    return {"kind": "echo", "payload": {"key": key, "index": index}}


async def send_load(
    base_url: str, api_key: str, *, prefix: str, count: int, rate: float, sleep_seconds: float, give_up_after: float
) -> LoadResult:
    """Start `count` requests at `rate` a second over CLIENTS clients; return once each is settled."""
    result = LoadResult()
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    headers = {"Authorization": f"Bearer {api_key}"}
    http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=HTTP_TIMEOUT_SECONDS, limits=limits)
    async with http:
        clients = [
            asyncio.create_task(_client(http, queue, result, prefix, sleep_seconds, give_up_after))
            for _ in range(CLIENTS)
        ]
        start = time.monotonic()
        for index in range(count):
            await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))  # the pace of arrivals
            queue.put_nowait(index)
        for _ in clients:
            queue.put_nowait(None)
        await asyncio.gather(*clients)
    return result


async def _client(
    http: httpx.AsyncClient,
    queue: asyncio.Queue[int | None],
    result: LoadResult,
    prefix: str,
    sleep_seconds: float,
    give_up_after: float,
) -> None:
    while (index := await queue.get()) is not None:
        key = f"{prefix}-{index:05d}"
        await submit_until_accepted(
            http, key, request_body(index, key, sleep_seconds), result, time.monotonic() + give_up_after
        )


async def submit_until_accepted(
    http: httpx.AsyncClient, key: str, body: dict[str, Any], result: LoadResult, deadline: float
) -> None:
    """POST with `key` until a 202 (recorded), a 4xx other than 409/429 (recorded), or the deadline."""
    delay = 0.2
    while time.monotonic() < deadline:
        try:
            response = await http.post("/v1/requests", json=body, headers={"Idempotency-Key": key})
        except httpx.TransportError as exc:
            result.retried[type(exc).__name__] += 1
        else:
            if response.status_code == 202:
                request_id = str(response.json()["id"])
                result.accepted.setdefault(key, request_id)
                result.ids_per_key[key].add(request_id)
                result.replayed += response.headers.get("idempotent-replayed") == "true"
                return
            if response.status_code not in (409, 429) and response.status_code < 500:
                result.rejected.append((key, response.status_code, response.text[:300]))
                return
            result.retried[str(response.status_code)] += 1
        await asyncio.sleep(delay)  # backoff before the same key again
        delay = min(delay * 2, 2.0)
    result.unaccepted.append(key)
