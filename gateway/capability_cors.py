"""Capability URLs are readable from any origin: `Access-Control-Allow-Origin: *`, no credentials.

A capability URL (`links.events`, `?token=`) is a bearer secret in the URL itself, sent without
cookies or an Authorization header, so letting any origin read what it opens gives nothing away
that holding the URL does not: a partner's web app on its own origin can run
`new EventSource(links.events)` without the deployment listing that origin in
ACKFLOW_CORS_ORIGINS. Routes opened with an API key keep the configured CORS. Browsers' native
EventSource sends no preflight (not even with Last-Event-ID on a reconnect), so none is needed.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send


class CapabilityCors(ASGIMiddleware):
    """On the routes it is given: any origin may read an answer to a request that carries `?token=`."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if "token" not in parse_qs(scope.get("query_string", b"").decode("latin-1")):
            await next_app(scope, receive, send)
            return

        async def send_readable(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                headers["Access-Control-Allow-Origin"] = "*"
                if "Access-Control-Allow-Credentials" in headers:
                    del headers["Access-Control-Allow-Credentials"]
            await send(message)

        await next_app(scope, receive, send_readable)
