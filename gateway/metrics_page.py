"""GET /metrics on the gateway's HTTP port: the process's Prometheus metrics (ackflow/metrics).

Served here unless ACKFLOW_METRICS_PORT gives the gateway a metrics port of its own (then only
there). Open to anyone who can reach the port unless ACKFLOW_METRICS_TOKEN is set, when it wants
`Authorization: Bearer <token>` and answers 401 problem+json without it. Not in the OpenAPI schema:
it is for operators, not API clients.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.di import NamedDependency

from ackflow.errors import Unauthorized
from ackflow.metrics import CONTENT_TYPE, exposition, token_matches
from gateway.services import GatewayServices


@get("/metrics", include_in_schema=False, media_type=CONTENT_TYPE)
async def metrics_page(request: Request[Any, Any, Any], services: NamedDependency[GatewayServices]) -> Response[bytes]:
    """The text exposition, after the scrape-time refresh (rate-limited, bounded in time)."""
    token = services.settings.metrics_token
    if token and not token_matches(request.headers.get("authorization"), token):
        raise Unauthorized("send the metrics token as `Authorization: Bearer <ACKFLOW_METRICS_TOKEN>`")
    return Response(await exposition(), media_type=CONTENT_TYPE)
