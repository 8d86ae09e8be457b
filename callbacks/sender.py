"""One webhook attempt: check the target, sign, POST, and describe what happened.

The attempt connects to the address the SSRF check approved (the Host header and TLS server name
stay the URL's host), so a DNS answer that changes after the check cannot redirect it inside.
Redirects are not followed. Whatever happens is an `AttemptResult`, never an exception: a refused
connection is as much an outcome as a 500.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from ackflow.netguard import UnsafeUrl, check_target
from callbacks.signing import signature_headers

ATTEMPT_TIMEOUT_SECONDS = 15.0
RESPONSE_EXCERPT_BYTES = 1024
USER_AGENT = "ackflow-webhooks/1"


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt did. `retry_after` is the receiver's Retry-After (on 429/503), in seconds."""

    status_code: int | None
    latency_ms: int
    response_body: str | None
    error: str | None
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver says this endpoint is no more."""
        return self.status_code == 410


class WebhookSender:
    """Sends signed webhook attempts over one shared HTTP client."""

    def __init__(self, client: httpx.AsyncClient, *, allow_private: bool) -> None:
        self._client = client
        self._allow_private = allow_private

    async def send(self, url: str, message_id: str, body: str, secrets: Sequence[str]) -> AttemptResult:
        started = time.monotonic()
        try:
            target = await check_target(url, allow_private=self._allow_private)
        except UnsafeUrl as refused:
            return AttemptResult(None, _since(started), None, f"refused: {refused.detail}")
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **signature_headers(message_id, body, secrets),
        }
        pinned_url, extensions = _pinned(target.url, target.host, target.addresses[0], target.scheme)
        headers["host"] = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
        try:
            response = await self._client.post(
                pinned_url,
                content=body.encode(),
                headers=headers,
                extensions=extensions,
                timeout=ATTEMPT_TIMEOUT_SECONDS,
                follow_redirects=False,
            )
        except httpx.TimeoutException:
            return AttemptResult(None, _since(started), None, f"timed out after {ATTEMPT_TIMEOUT_SECONDS:.0f}s")
        except httpx.HTTPError as exc:
            return AttemptResult(None, _since(started), None, f"{type(exc).__name__}: {exc}"[:500])
        # Postgres text cannot hold NUL: an excerpt with one could never be recorded (and would be resent).
        excerpt = response.content[:RESPONSE_EXCERPT_BYTES].decode("utf-8", errors="replace").replace("\x00", "\ufffd")
        retry_after = _retry_after(response) if response.status_code in (429, 503) else None
        error = None if response.is_success else f"HTTP {response.status_code}"
        return AttemptResult(response.status_code, _since(started), excerpt, error, retry_after)


def _pinned(url: str, host: str, address: str, scheme: str) -> tuple[str, dict[str, str]]:
    """The URL with its host replaced by the checked address, and the TLS server name to use."""
    pinned = str(httpx.URL(url).copy_with(host=address))
    return pinned, ({"sni_hostname": host} if scheme == "https" else {})


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
