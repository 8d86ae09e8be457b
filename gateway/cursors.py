"""Opaque pagination cursors: the last id of a page, base64url-encoded."""

from __future__ import annotations

import base64
import binascii
import uuid

from ackflow.errors import InvalidInput

MAX_PAGE_SIZE = 200  # the most items a page of any list holds (`limit`)


def encode_cursor(last_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(last_id.bytes).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> uuid.UUID:
    """The id a cursor stands for, or a 400 naming the `cursor` parameter."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return uuid.UUID(bytes=raw)
    except (binascii.Error, ValueError):
        raise InvalidInput(
            "cursor is not valid: pass the next_cursor of a previous page",
            status_code=400,
            errors=[{"field": "cursor", "in": "query", "message": "malformed cursor"}],
        ) from None
