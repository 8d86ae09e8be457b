"""The WHATWG `text/event-stream` format: frames as the gateway writes them, and a parser of them
for the Python client and the tests."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from ackflow.inputs import parse_digits

MAX_RETRY_MS = 24 * 3600 * 1000  # a longer `retry:` is ignored (and a 5,000-digit one made int() raise)
_LINE_END = re.compile(r"\r\n|\r|\n")  # the only line ends of an event stream (not U+2028, U+0085, ...)


def event_frame(event_id: str, event: str, data: str) -> bytes:
    """One event: its `id` and `event` lines, a `data` line per line of `data`, and the blank line."""
    lines = [f"id: {_LINE_END.sub('', event_id)}", f"event: {_LINE_END.sub('', event)}"]
    lines += [f"data: {line}" for line in _LINE_END.split(data)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def comment_frame(text: str) -> bytes:
    """A comment (a line per line of `text`): clients ignore it; it keeps proxies from closing the stream."""
    return "".join(f": {line}\r\n" for line in _LINE_END.split(text)).encode() + b"\r\n"


def retry_frame(milliseconds: int) -> bytes:
    """How long a client waits before it reconnects (a frame of no event: it has no data)."""
    return f"retry: {milliseconds}\r\n\r\n".encode()


@dataclass
class SseMessage:
    """One dispatched event: its id (the last seen), type (`message` if none) and data lines joined."""

    id: str
    event: str
    data: str


class EventStreamParser:
    """The WHATWG event-stream format, fed bytes as they come: always UTF-8 (a leading BOM dropped),
    lines ended by CRLF, LF or CR only, comments, multi-line data, `id` (kept across events) and `retry`.

    (httpx's `aiter_lines` also splits lines at U+2028, U+0085 and the like, which JSON may carry raw.)
    An event the stream ends in the middle of is dropped, as the spec says.
    """

    def __init__(self, last_event_id: str) -> None:
        self.last_event_id = last_event_id  # as of the last dispatch: what a reconnect sends
        self.retry: float | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False
        self._pending = ""
        self._id = last_event_id
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes, *, final: bool = False) -> list[SseMessage]:
        """The events this chunk completes (`final`: the stream has ended)."""
        text = self._pending + self._decoder.decode(chunk, final)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        held_cr = text.endswith("\r") and not final  # maybe the first half of a CRLF split across chunks
        *lines, self._pending = _LINE_END.split(text[:-1] if held_cr else text)
        self._pending += "\r" if held_cr else ""
        return [message for line in lines if (message := self._line(line)) is not None]

    def _line(self, line: str) -> SseMessage | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and (milliseconds := parse_digits(value, maximum=MAX_RETRY_MS)) is not None:
            self.retry = milliseconds / 1000
        return None

    def _dispatch(self) -> SseMessage | None:
        self.last_event_id = self._id
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SseMessage(self.last_event_id, event or "message", "\n".join(data))
