"""Live status events on Redis pub/sub: channel names and the message the relay publishes.

Redis carries them only as a fast path; the record is `request_events` in Postgres, from which every
consumer catches up. Each message carries the request's `version`, which grows by exactly one per
event, so a consumer can tell a duplicate (version already seen) from a gap (version skipped).
"""

from __future__ import annotations

from typing import Any

import msgspec


class LiveEvent(msgspec.Struct, frozen=True):
    """One status event as published: the request_events id, topic, version and the request's state."""

    event_id: int
    topic: str
    request_id: str
    tenant_id: str
    version: int
    data: dict[str, Any]


def request_channel(request_id: str) -> str:
    """The channel of one request's events (SSE, WebSocket and long-poll waiters of that request)."""
    return f"ackflow:request:{request_id}"


def tenant_channel(tenant_id: str) -> str:
    """The channel of all of one tenant's events (the tenant-wide SSE stream)."""
    return f"ackflow:tenant:{tenant_id}"


_decoder = msgspec.json.Decoder(LiveEvent)


def encode_live_event(event: LiveEvent) -> bytes:
    return msgspec.json.encode(event)


def decode_live_event(raw: bytes) -> LiveEvent | None:
    """The event, or None for a message that is not one (never trust the wire)."""
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError:
        return None


REVOKED_KEYS_CHANNEL = "ackflow:keys:revoked"  # messages: the SHA-256 (hex) of a revoked API key
