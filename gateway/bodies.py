"""JSON request bodies: the checks Litestar leaves to the application.

Litestar decodes any body as JSON whatever its Content-Type, treats an empty body as a missing
argument, and lets two msgspec failures escape as exceptions it does not recognise (invalid UTF-8,
nesting deeper than the decoder's recursion limit), which would be 500s. Here each is a 4xx.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import ClientException, SerializationException
from litestar.handlers.base import BaseRouteHandler

from ackflow.errors import MalformedRequest


class JsonRequest(Request[Any, Any, Any]):
    """Litestar's Request, where a body msgspec cannot decode at all is malformed input, not a crash."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except UnicodeDecodeError:
            raise SerializationException("the body is not valid UTF-8") from None
        except RecursionError:
            raise SerializationException("the body is nested too deeply") from None


async def require_json_body(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard for routes that take a JSON body: a JSON media type (or none given) and a body at all.

    Runs after authentication, so an unauthenticated caller still learns nothing about its body.
    """
    media_type = connection.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type and not _is_json(media_type):
        raise ClientException(
            f"the body is {media_type}; send it as application/json (with curl: -H 'Content-Type: application/json')",
            status_code=415,
        )
    if isinstance(connection, Request) and not await connection.body():
        raise MalformedRequest('the request body is empty: send a JSON object such as {"kind": "echo"}')


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))
