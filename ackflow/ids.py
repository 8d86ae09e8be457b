"""Identifiers: time-ordered request ids (UUIDv7, RFC 9562) so the newest-first index is also id order.

Within one process ids are strictly increasing even inside one millisecond: the 12 `rand_a` bits
count up from a random start (RFC 9562's "fixed-length dedicated counter", method 1), and a
counter that runs out borrows the next millisecond. Across processes, order holds to the millisecond.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_millis = 0
_counter = 0
_COUNTER_MAX = 0xFFF


def new_request_id() -> uuid.UUID:
    """A UUIDv7: 48 bits of Unix milliseconds, a 12-bit counter, then 62 random bits."""
    global _last_millis, _counter
    with _lock:
        millis = time.time_ns() // 1_000_000
        if millis > _last_millis:
            _last_millis, _counter = millis, int.from_bytes(os.urandom(2), "big") & 0x7FF  # room to count up
        elif _counter < _COUNTER_MAX:
            _counter += 1
        else:
            _last_millis, _counter = _last_millis + 1, 0
        millis, counter = _last_millis, _counter
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= counter << 64  # rand_a, used as a counter
    value |= 0b10 << 62  # RFC 4122 variant
    value |= int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)  # rand_b
    return uuid.UUID(int=value)
