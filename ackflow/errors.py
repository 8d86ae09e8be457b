"""ackflow's exceptions: one root, one branch per kind of trouble.

::

    AckflowError
    ├── ConfigurationError        a setting is missing or malformed (names the variable and the fix)
    ├── ServiceUnavailable        Postgres, Redis or Temporal cannot be reached (names the variable and address)
    ├── DevStackError             `ackflow dev` cannot start (port taken, state dir in use, a server failed)
    ├── PermanentDispatchError    the relay can never dispatch an outbox row (it is dead-lettered at once)
    ├── DomainError               a client's request cannot be carried out; the gateway maps each to problem+json
    │   ├── MalformedRequest      the body is not JSON at all (or is empty)          400
    │   ├── InvalidInput          a parameter (400) or the body's content (422) is invalid
    │   │   └── UnsafeUrl         a webhook URL that resolves to an internal address  422 (ackflow.netguard)
    │   ├── UnknownKind           no worker has registered a handler for the kind    422
    │   ├── NotFound              no such resource for this tenant                   404
    │   ├── Unauthorized          missing, malformed or unknown API key              401
    │   ├── Conflict              the resource's state forbids the operation          409
    │   └── TooManyRequests       over the tenant's rate or stream limit (Retry-After) 429
    └── (ackflow.client) ApiError, StreamUnavailable, WaitTimeout: what the Python client raises
"""

from __future__ import annotations

from typing import Any


class AckflowError(Exception):
    """Root of every error ackflow raises on purpose."""


class ConfigurationError(AckflowError):
    """A setting is missing or malformed; the message names the variable and how to fix it."""


class ServiceUnavailable(AckflowError):
    """A backing service cannot be reached; the message names the variable and the address tried."""


class DevStackError(AckflowError):
    """The development stack cannot start; the message says why in one line."""


class PermanentDispatchError(AckflowError):
    """An outbox row's dispatch can never succeed (e.g. Temporal refuses the start as invalid): retrying
    would only postpone it for ever, so the relay dead-letters it at once."""


class DomainError(AckflowError):
    """A client's request cannot be carried out. Carries what the gateway needs for problem+json."""

    status_code: int = 400
    type_slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors

    def extensions(self) -> dict[str, Any]:
        """Members of the problem beyond type, title, status, detail and errors (RFC 9457 extensions)."""
        return {}


class MalformedRequest(DomainError):
    """The body cannot be read as JSON at all."""

    status_code = 400
    type_slug = "malformed-request"
    title = "Malformed request"


class InvalidInput(DomainError):
    """A query, path or header parameter is invalid (400), or the body's content is (422)."""

    type_slug = "invalid-input"
    title = "Invalid input"

    def __init__(self, detail: str, *, status_code: int = 422, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail, errors=errors)
        self.status_code = status_code
        if status_code == 400:
            self.type_slug = "invalid-parameter"
            self.title = "Invalid parameter"


class UnknownKind(DomainError):
    """No running worker has registered a handler for this kind."""

    status_code = 422
    type_slug = "unknown-kind"
    title = "Unknown request kind"


class NotFound(DomainError):
    """The resource does not exist for this tenant (another tenant's resource looks the same)."""

    status_code = 404
    type_slug = "not-found"
    title = "Not found"


class Unauthorized(DomainError):
    """The API key is missing, malformed, unknown or revoked."""

    status_code = 401
    type_slug = "unauthorized"
    title = "Unauthorized"


class Forbidden(DomainError):
    """The caller is known but may not do this (a capability token used beyond what it grants)."""

    status_code = 403
    type_slug = "forbidden"
    title = "Forbidden"


class PayloadTooLarge(DomainError):
    """A part of the body is over its own limit (the whole body's limit answers the same status)."""

    status_code = 413
    type_slug = "payload-too-large"
    title = "Payload too large"


class Conflict(DomainError):
    """The resource's current state forbids the operation (for example cancelling a finished request)."""

    status_code = 409
    type_slug = "conflict"
    title = "Conflict"


class KeyBusy(Conflict):
    """A request under concurrency_policy 'skip' whose key is full: nothing accepted. `holders` (ids of
    the key's requests holding it, as of the refusal) go out as the problem's `running_requests`."""

    type_slug = "concurrency-key-busy"
    title = "Concurrency key busy"

    def __init__(self, detail: str, *, holders: list[str]) -> None:
        super().__init__(detail, errors=[{"field": "concurrency_key", "in": "body", "message": "the key is full"}])
        self.holders = holders

    def extensions(self) -> dict[str, Any]:
        return {"running_requests": self.holders}


class BatchRejected(InvalidInput):
    """POST /v1/requests/batch accepted nothing: `items` are the answers of the items that failed (each
    its index and problem), as in a batch's 202."""

    def __init__(self, detail: str, *, items: list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.items = items

    def extensions(self) -> dict[str, Any]:
        return {"items": self.items}


class TooManyRequests(DomainError):
    """The tenant is over its accept rate or its concurrent stream limit; retry after `retry_after` s."""

    status_code = 429
    type_slug = "too-many-requests"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
