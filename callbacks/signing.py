"""Standard Webhooks signatures, made with the `standardwebhooks` library itself.

`webhook-signature` holds one `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` per active secret,
space separated, so during a secret rotation a receiver holding either secret can verify.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks import Webhook


def signature_headers(
    message_id: str, body: str, secrets: Sequence[str], *, now: datetime | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt (the timestamp is the attempt's)."""
    if not secrets:
        raise ValueError("a webhook needs at least one signing secret")
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    signatures = " ".join(Webhook(secret).sign(message_id, moment, body) for secret in secrets)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": signatures,
    }
