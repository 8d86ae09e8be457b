"""One webhook attempt: check the target, sign, POST, and describe what happened.

The attempt connects to the address the SSRF check approved (the Host header and TLS server name
stay the URL's host), so a DNS answer that changes after the check cannot redirect it inside. The
check runs at every send; the host's DNS answer may be a few seconds old (netguard.Resolver).
Redirects are not followed. Whatever happens is an `AttemptResult`, never an exception: a refused
connection is as much an outcome as a 500.

It sends through an httpx transport, not a client: a client's per-request work (cookies kept from
one partner's responses for the next request, URL merging, redirect and auth hooks) is nothing a
webhook needs, and cost about a fifth of each send's CPU.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from ackflow.inputs import parse_digits
from ackflow.metrics import WEBHOOK_ATTEMPT_DURATION, WEBHOOK_ATTEMPTS
from ackflow.netguard import Resolver, UnsafeUrl, check_target
from callbacks.signing import signature_headers

ATTEMPT_DEADLINE_SECONDS = 15.0  # the whole attempt: resolve, connect, send, and read the answer
RESPONSE_EXCERPT_BYTES = 1024  # of the answer's body; the rest is never read
USER_AGENT = "ackflow-webhooks/1"
# A Retry-After of more seconds than this (a year) is the receiver's mistake: ignored, as is any non-ASCII digit.
MAX_RETRY_AFTER_SECONDS = 365 * 24 * 3600


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt did. `retry_after` is the receiver's Retry-After (on 429/503), in seconds."""

    status_code: int | None
    latency_ms: int
    response_body: str | None
    error: str | None
    retry_after: float | None = None
    outcome: str = "error"  # delivered | rejected (a non-2xx answer) | timeout | error | refused (netguard)

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver says this endpoint is no more."""
        return self.status_code == 410


class WebhookSender:
    """Sends signed webhook attempts over one shared HTTP transport.

    A partner's answer is bounded in bytes and time: at most RESPONSE_EXCERPT_BYTES of its body are
    read, and the whole attempt has one deadline (`deadline_seconds`). httpx's own timeouts are per
    phase and per read, so a receiver sending a byte every few seconds would extend them for ever;
    one deadline around everything cannot be extended.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        allow_private: bool,
        deadline_seconds: float = ATTEMPT_DEADLINE_SECONDS,
    ) -> None:
        self._transport = transport
        self._allow_private = allow_private
        self._deadline_seconds = deadline_seconds
        self._resolver = Resolver()

    async def send(
        self, url: str, message_id: str, body: str, secrets: Sequence[str], *, traceparent: str | None = None
    ) -> AttemptResult:
        """One attempt; counted by outcome and timed (ackflow_webhook_attempts_total, ..._duration_seconds).
        `traceparent`: the attempt's span (ackflow/tracing.py), sent as the W3C header so the partner's own
        spans join the request's trace; the signature covers id, timestamp and body only."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._deadline_seconds):
                result = await self._attempt(url, message_id, body, secrets, started, traceparent)
        except TimeoutError:
            result = AttemptResult(
                None, _since(started), None, f"timed out after {self._deadline_seconds:g}s", outcome="timeout"
            )
        WEBHOOK_ATTEMPTS.labels(outcome=result.outcome).inc()
        WEBHOOK_ATTEMPT_DURATION.observe(time.monotonic() - started)
        return result

    async def _attempt(
        self, url: str, message_id: str, body: str, secrets: Sequence[str], started: float, traceparent: str | None
    ) -> AttemptResult:
        try:
            target = await check_target(url, allow_private=self._allow_private, resolver=self._resolver)
        except UnsafeUrl as refused:
            return AttemptResult(None, _since(started), None, f"refused: {refused.detail}", outcome="refused")
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **signature_headers(message_id, body, secrets),
            "host": target.host if target.port in (80, 443) else f"{target.host}:{target.port}",
        }
        if traceparent is not None:
            headers["traceparent"] = traceparent
        try:
            pinned_url, extensions = _pinned(target.url, target.host, target.addresses[0], target.scheme)
            request = httpx.Request("POST", pinned_url, content=body.encode(), headers=headers, extensions=extensions)
            response = await self._transport.handle_async_request(request)
            try:
                content = await _excerpt(response)
            finally:
                await response.aclose()  # a body left unread: httpcore closes the connection, never drains it
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            outcome = "timeout" if isinstance(exc, httpx.TimeoutException) else "error"
            return AttemptResult(None, _since(started), None, f"{type(exc).__name__}: {exc}"[:500], outcome=outcome)
        # Postgres text cannot hold NUL: an excerpt with one could never be recorded (and would be resent).
        excerpt = content.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        retry_after = _retry_after(response) if response.status_code in (429, 503) else None
        error = None if response.is_success else f"HTTP {response.status_code}"
        outcome = "delivered" if response.is_success else "rejected"
        return AttemptResult(response.status_code, _since(started), excerpt, error, retry_after, outcome)


async def _excerpt(response: httpx.Response) -> bytes:
    """The first RESPONSE_EXCERPT_BYTES of the body as sent (not decompressed: a small compressed body
    can inflate to gigabytes). Reading stops there; one network read brings at most 64 KiB."""
    received = bytearray()
    async for chunk in response.aiter_raw():
        received += chunk
        if len(received) >= RESPONSE_EXCERPT_BYTES:
            break
    return bytes(received[:RESPONSE_EXCERPT_BYTES])


def _pinned(url: str, host: str, address: str, scheme: str) -> tuple[httpx.URL, dict[str, object]]:
    """The URL with its host replaced by the checked address, and the request's extensions: the TLS
    server name to use (no httpx timeouts: the attempt's deadline bounds it all)."""
    return _pinned_url(url, address), ({"sni_hostname": host} if scheme == "https" else {})


@functools.lru_cache(maxsize=4096)
def _pinned_url(url: str, address: str) -> httpx.URL:
    """Parsing and rebuilding the URL cost ~30 us of a send's ~600; an endpoint's URL and address rarely change."""
    return httpx.URL(url).copy_with(host=address)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    seconds = parse_digits(value, maximum=MAX_RETRY_AFTER_SECONDS)
    if seconds is not None:
        return float(seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
