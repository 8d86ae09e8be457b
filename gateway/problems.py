"""RFC 9457 problem details for every error the gateway answers, each with a stable `type`.

Domain errors map one to one; Litestar's own HTTP errors (bad JSON, failed validation, unknown
route, wrong method, oversized body) are rewritten into the same shape; anything unexpected is a
500 that says nothing about internals, logged with its traceback.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import asyncpg
from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from redis.exceptions import RedisError

from ackflow.contracts import PROBLEM_MEDIA_TYPE
from ackflow.errors import DomainError, ServiceUnavailable, TooManyRequests

log = logging.getLogger(__name__)

TYPE_PREFIX = "urn:ackflow:problem:"
BODY_PARAMETER = "data"  # Litestar's name for the decoded body; clients know it as the body or its fields
NAMED_FIELD = re.compile(r"field `([^`]+)`")  # msgspec: "Object missing required field `kind`"

_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("invalid-input", "Invalid input"),
    429: ("too-many-requests", "Too many requests"),
    503: ("service-unavailable", "Service unavailable"),
}


def problem_body(status: int, slug: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    """A problem's members (RFC 9457), those of `extra` that are not None included."""
    body: dict[str, Any] = {"type": TYPE_PREFIX + slug, "title": title, "status": status, "detail": detail}
    body.update({key: value for key, value in extra.items() if value is not None})
    return body


def domain_problem_body(exc: DomainError) -> dict[str, Any]:
    """The problem a DomainError stands for (a batch item's, say)."""
    return problem_body(exc.status_code, exc.type_slug, exc.title, exc.detail, errors=exc.errors, **exc.extensions())


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    request: Request[Any, Any, Any] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    """A problem+json response."""
    body = problem_body(status, slug, title, detail, **extra)
    if request is not None:
        body["instance"] = request.url.path
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    headers = {"WWW-Authenticate": 'Bearer realm="ackflow"'} if exc.status_code == 401 else None
    if isinstance(exc, TooManyRequests):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return problem(
        exc.status_code,
        exc.type_slug,
        exc.title,
        exc.detail,
        request=request,
        headers=headers,
        errors=exc.errors,
        **exc.extensions(),
    )


def validation_error_handler(request: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """A body that parsed but does not fit the schema is 422; a bad query or path parameter is 400."""
    errors = exc.extra if isinstance(exc.extra, list) else []
    in_body = any(isinstance(e, dict) and e.get("source") == "body" for e in errors)
    fields = [
        {"field": _field_name(e), "in": e.get("source", "body"), "message": e.get("message", "")}
        for e in errors
        if isinstance(e, dict)
    ]
    if in_body:
        return problem(
            422,
            "invalid-input",
            "Invalid input",
            "the request body does not match the schema",
            request=request,
            errors=fields,
        )
    return problem(
        400,
        "invalid-parameter",
        "Invalid parameter",
        "a query or path parameter is not valid",
        request=request,
        errors=fields,
    )


def _field_name(error: dict[str, Any]) -> str:
    """The field an error is about: for an error about the whole body, the field msgspec names, if any."""
    key = str(error.get("key", BODY_PARAMETER))
    if key != BODY_PARAMETER:
        return key
    named = NAMED_FIELD.search(str(error.get("message", "")))
    return named.group(1) if named else "body"


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    slug, title = _SLUGS.get(status, ("http-error", "HTTP error"))
    detail = exc.detail
    if status == 400 and isinstance(exc.__cause__, SerializationException):
        # Litestar could not decode the body (syntax, encoding, numbers out of range, nesting).
        slug, title = "malformed-request", "Malformed request"
        detail = f"the request body is not valid JSON ({exc.__cause__})"
    if status >= 500:
        return internal_error_handler(request, exc)
    return problem(status, slug, title, detail or title, request=request, headers=exc.headers)


def not_found_page_as_problem(response: Response[Any]) -> Response[Any]:
    """Litestar's docs router answers an unknown /schema/... path with an HTML page: make it a 404 problem too."""
    if response.status_code == 404:
        return problem(404, "not-found", "Not found", "Not Found")
    return response


def unavailable_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """A dependency that is down or slow: 503 with a hint to retry, never a hang or a 500."""
    log.warning("dependency unavailable while serving %s %s: %r", request.method, request.url.path, exc)
    return problem(
        503,
        "service-unavailable",
        "Service unavailable",
        "a backing service is unavailable; retry shortly",
        request=request,
        headers={"Retry-After": "2"},
    )


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unexpected error serving %s %s", request.method, request.url.path, exc_info=exc)
    return problem(
        500, "internal-error", "Internal error", "an unexpected error occurred; it has been logged", request=request
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    DomainError: domain_error_handler,
    ValidationException: validation_error_handler,
    HTTPException: http_error_handler,
    ServiceUnavailable: unavailable_handler,
    asyncpg.PostgresConnectionError: unavailable_handler,
    asyncpg.InterfaceError: unavailable_handler,
    asyncpg.exceptions.InternalClientError: unavailable_handler,
    asyncpg.exceptions.CannotConnectNowError: unavailable_handler,
    asyncpg.exceptions.TooManyConnectionsError: unavailable_handler,
    # Lost a lock race Postgres broke (the transaction was rolled back whole): nothing written, retry.
    asyncpg.exceptions.DeadlockDetectedError: unavailable_handler,
    asyncpg.exceptions.SerializationError: unavailable_handler,
    TimeoutError: unavailable_handler,
    ConnectionError: unavailable_handler,
    OSError: unavailable_handler,
    RedisError: unavailable_handler,
    Exception: internal_error_handler,
}
