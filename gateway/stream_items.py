"""What a stream hands its writer (SSE, WebSocket, long poll): events, and the signals between them."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import msgspec

from ackflow.contracts import TERMINAL_STATUSES
from ackflow.sse import event_frame
from gateway.hub import Resync


@dataclass(frozen=True)
class StreamEvent:
    """One status event as clients see it: `id` is the request_events id (the SSE id)."""

    id: int
    topic: str
    status: str
    version: int
    request_id: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @functools.cached_property
    def sse(self) -> bytes:
        """The event as an SSE frame, encoded once however many clients it is written to."""
        return event_frame(str(self.id), self.topic, msgspec.json.encode(self.data).decode())


class KeepAlive:
    """Nothing happened for a while; say so, so proxies keep the connection open."""


class Ending:
    """An item after which the stream ends."""


class Overflow(Ending):
    """The client read too slowly and its buffer filled: close, and let it reconnect and catch up."""


class Flush:
    """Nothing more is queued for this stream: write what has been gathered (one write for a burst)."""


class Revoked(Ending):
    """The API key that opened the stream was revoked: end it (a reconnect gets 401)."""


KEEPALIVE = KeepAlive()
OVERFLOW = Overflow()
FLUSH = Flush()
REVOKED = Revoked()
StreamItem = StreamEvent | KeepAlive | Overflow | Flush | Revoked
LiveItem = StreamItem | Resync  # RESYNC: read Postgres for what was missed
