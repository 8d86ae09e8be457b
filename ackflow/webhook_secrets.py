"""Webhook signing secrets in the Standard Webhooks format: `whsec_` + base64 of 32 random bytes."""

from __future__ import annotations

import base64
import os

SECRET_PREFIX = "whsec_"


def new_webhook_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()
