"""A partner's webhook receiver that misbehaves as real ones do, and checks what it is sent.

It verifies every request's Standard Webhooks signature against the endpoint's secret, remembers
every body seen under each `webhook-id`, fails the first attempt of one message id in five with a
500 and answers one request in eight slowly (1.5 s). Which ids fail is decided by a hash of the
id, so a run is repeatable.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from ackflow import devstack
from tests.receiver import read_body, serving

SLOW_ANSWER_SECONDS = 1.5


class SigningReceiver:
    """An ASGI app: what a partner's server got, delivered (answered 2xx) and refused."""

    def __init__(self) -> None:
        self.port = devstack.free_port()
        self.secret = ""  # set once the endpoint is registered
        self.attempts: Counter[str] = Counter()
        self.bodies: defaultdict[str, set[bytes]] = defaultdict(set)
        self.delivered: set[str] = set()
        self.bad_signatures = 0
        self.failed_on_purpose = 0
        self.slow_answers = 0

    def url(self) -> str:
        return f"http://{devstack.LOOPBACK}:{self.port}/hook"

    def ids_with_two_bodies(self) -> list[str]:
        return sorted(message_id for message_id, bodies in self.bodies.items() if len(bodies) > 1)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status = await self._answer(headers, body)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok" if status < 300 else b"no"})

    async def _answer(self, headers: dict[str, str], body: bytes) -> int:
        """Record the request; the status to answer it with."""
        message_id = headers.get("webhook-id", "")
        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            self.bad_signatures += 1
            return 400
        self.attempts[message_id] += 1
        self.bodies[message_id].add(body)
        digest = hashlib.sha256(f"{message_id}/{self.attempts[message_id]}".encode()).digest()
        if digest[0] % 8 == 0:
            self.slow_answers += 1
            await asyncio.sleep(SLOW_ANSWER_SECONDS)  # the partner is slow: the fault itself
        if self.attempts[message_id] == 1 and hashlib.sha256(message_id.encode()).digest()[0] % 5 == 0:
            self.failed_on_purpose += 1
            return 500
        self.delivered.add(message_id)
        return 200


@contextlib.asynccontextmanager
async def running_signing_receiver() -> AsyncIterator[SigningReceiver]:
    """A SigningReceiver served on loopback in this event loop, stopped afterwards."""
    receiver = SigningReceiver()
    async with serving(receiver, receiver.port):
        yield receiver
