"""/v1/webhooks: a tenant's webhook endpoints, their secrets, test sends and delivery logs.

URLs are checked against SSRF at registration (and again by the sender before every attempt).
Secrets are shown once, at creation and rotation; a rotated-out secret keeps signing for 24 h.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from ackflow.contracts import DeliveryState
from ackflow.db.queries import sql
from ackflow.errors import InvalidInput, NotFound
from ackflow.ids import new_request_id
from ackflow.netguard import check_target
from ackflow.timestamps import wire_timestamp
from ackflow.webhook_secrets import new_webhook_secret
from gateway.auth import current_tenant, require_api_key
from gateway.bodies import require_json_body
from gateway.cursors import MAX_PAGE_SIZE, decode_cursor, encode_cursor
from gateway.services import GatewayServices
from gateway.webhook_schemas import (
    CreatedEndpoint,
    CreateEndpoint,
    Delivery,
    DeliveryPage,
    Endpoint,
    EndpointPage,
    Recover,
    Requeued,
    SigningSecret,
    UpdateEndpoint,
    delivery_from_row,
)

ROTATION_OVERLAP_SECONDS = 24 * 3600


class WebhooksController(Controller):
    """Webhook endpoints of the authenticated tenant."""

    path = "/v1/webhooks"
    guards = [require_api_key]
    tags = ["webhooks"]

    @post("/", status_code=201, summary="Register a webhook endpoint", guards=[require_json_body])
    async def create(
        self,
        data: JSONBody[CreateEndpoint],
        request: Request[Any, Any, Any],
        services: NamedDependency[GatewayServices],
    ) -> CreatedEndpoint:
        """The answer carries the endpoint's signing secret; it is not shown again."""
        tenant_id = current_tenant(request)
        await check_target(data.url, allow_private=services.settings.webhook_allow_private)
        secret = new_webhook_secret()
        row = await services.pool.fetchrow(
            sql("create_endpoint"),
            uuid.uuid4(),
            tenant_id,
            data.url,
            data.description,
            _unique(data.event_types),
            data.max_concurrency,
            data.rate_limit_per_second,
            secret,
        )
        return CreatedEndpoint(**_endpoint_fields(row), secret=secret)

    @get("/", summary="List webhook endpoints")
    async def list_endpoints(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[GatewayServices],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE_SIZE)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=64)] = None,
    ) -> EndpointPage:
        tenant_id = current_tenant(request)
        after = decode_cursor(cursor) if cursor else None
        rows = await services.pool.fetch(sql("list_endpoints"), tenant_id, after, limit + 1)
        items = [Endpoint(**_endpoint_fields(row)) for row in rows[:limit]]
        return EndpointPage(items=items, next_cursor=encode_cursor(items[-1].id) if len(rows) > limit else None)

    @get("/signing-secret", summary="The tenant's signing secret for per-request callback_url webhooks")
    async def signing_secret(
        self, request: Request[Any, Any, Any], services: NamedDependency[GatewayServices]
    ) -> SigningSecret:
        secret = await services.pool.fetchval(
            sql("tenant_signing_secret"), current_tenant(request), new_webhook_secret()
        )
        return SigningSecret(secret)

    @get("/{endpoint_id:uuid}", summary="Get a webhook endpoint")
    async def read(
        self,
        endpoint_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        services: NamedDependency[GatewayServices],
    ) -> Endpoint:
        tenant_id = current_tenant(request)
        return Endpoint(**_endpoint_fields(await _endpoint(services.pool, endpoint_id, tenant_id)))

    @patch("/{endpoint_id:uuid}", summary="Change a webhook endpoint (or re-enable it)", guards=[require_json_body])
    async def update(
        self,
        endpoint_id: FromPath[uuid.UUID],
        data: JSONBody[UpdateEndpoint],
        request: Request[Any, Any, Any],
        services: NamedDependency[GatewayServices],
    ) -> Endpoint:
        tenant_id = current_tenant(request)
        if isinstance(data.url, str):
            await check_target(data.url, allow_private=services.settings.webhook_allow_private)
        row = await services.pool.fetchrow(
            sql("update_endpoint"),
            endpoint_id,
            tenant_id,
            _given(data.url),
            _given(data.description),
            _unique(data.event_types) if isinstance(data.event_types, list) else None,
            _given(data.max_concurrency),
            _given(data.rate_limit_per_second),
            data.rate_limit_per_second is not msgspec.UNSET,
            _given(data.enabled),
        )
        if row is None:
            raise NotFound(f"webhook endpoint {endpoint_id} does not exist")
        return Endpoint(**_endpoint_fields(row))

    @delete("/{endpoint_id:uuid}", status_code=204, summary="Delete a webhook endpoint")
    async def remove(
        self,
        endpoint_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        services: NamedDependency[GatewayServices],
    ) -> None:
        tenant_id = current_tenant(request)
        if await services.pool.fetchval(sql("delete_endpoint"), endpoint_id, tenant_id) is None:
            raise NotFound(f"webhook endpoint {endpoint_id} does not exist")

    @post("/{endpoint_id:uuid}/rotate-secret", status_code=200, summary="Rotate the signing secret")
    async def rotate_secret(
        self,
        endpoint_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        services: NamedDependency[GatewayServices],
    ) -> SigningSecret:
        """A new secret; the old one keeps signing beside it for 24 hours, so receivers can switch over."""
        tenant_id = current_tenant(request)
        secret = new_webhook_secret()
        rotated = await services.pool.fetchval(
            sql("rotate_endpoint_secret"), endpoint_id, tenant_id, secret, ROTATION_OVERLAP_SECONDS
        )
        if rotated is None:
            raise NotFound(f"webhook endpoint {endpoint_id} does not exist")
        return SigningSecret(secret)

    @post("/{endpoint_id:uuid}/test", status_code=202, summary="Send a webhook.test event now")
    async def send_test(
        self,
        endpoint_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        services: NamedDependency[GatewayServices],
    ) -> Response[dict[str, Any]]:
        tenant_id = current_tenant(request)
        delivery_id = new_request_id()
        body = msgspec.json.encode(
            {
                "type": "webhook.test",
                "timestamp": wire_timestamp(datetime.now(UTC)),
                "data": {"endpoint_id": str(endpoint_id)},
            }
        ).decode()
        created = await services.pool.fetchval(
            sql("create_test_delivery"), delivery_id, endpoint_id, f"msg_test_{delivery_id.hex}", body, tenant_id
        )
        if created is None:
            raise NotFound(f"webhook endpoint {endpoint_id} does not exist")
        location = f"/v1/deliveries/{delivery_id}"
        return Response(
            {"delivery_id": str(delivery_id), "links": {"delivery": location}},
            status_code=202,
            headers={"Location": location},
        )

    @get("/{endpoint_id:uuid}/deliveries", summary="An endpoint's deliveries, newest first")
    async def deliveries(
        self,
        endpoint_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        services: NamedDependency[GatewayServices],
        status: Annotated[str | None, QueryParameter(max_length=20)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE_SIZE)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=64)] = None,
    ) -> DeliveryPage:
        tenant_id = current_tenant(request)
        if status is not None and status not in set(DeliveryState):
            raise InvalidInput(
                f"status must be one of {', '.join(DeliveryState)}",
                status_code=400,
                errors=[{"field": "status", "in": "query", "message": "unknown delivery state"}],
            )
        await _endpoint(services.pool, endpoint_id, tenant_id)
        after = decode_cursor(cursor) if cursor else None
        rows = await services.pool.fetch(sql("list_deliveries"), endpoint_id, tenant_id, status, after, limit + 1)
        items = [msgspec.convert(delivery_from_row(row), type=Delivery) for row in rows[:limit]]
        return DeliveryPage(items=items, next_cursor=encode_cursor(items[-1].id) if len(rows) > limit else None)

    @post(
        "/{endpoint_id:uuid}/recover",
        status_code=202,
        summary="Resend every failed delivery since a time",
        guards=[require_json_body],
    )
    async def recover(
        self,
        endpoint_id: FromPath[uuid.UUID],
        data: JSONBody[Recover],
        request: Request[Any, Any, Any],
        services: NamedDependency[GatewayServices],
    ) -> Requeued:
        tenant_id = current_tenant(request)
        await _endpoint(services.pool, endpoint_id, tenant_id)
        status = await services.pool.execute(sql("requeue_failed_since"), endpoint_id, tenant_id, data.since)
        return Requeued(requeued=int(status.split()[-1]))


async def _endpoint(pool: asyncpg.Pool, endpoint_id: uuid.UUID, tenant_id: uuid.UUID) -> Any:
    row = await pool.fetchrow(sql("get_endpoint"), endpoint_id, tenant_id)
    if row is None:
        raise NotFound(f"webhook endpoint {endpoint_id} does not exist")
    return row


def _endpoint_fields(row: Any) -> dict[str, Any]:
    fields = set(Endpoint.__struct_fields__)
    return {key: value for key, value in dict(row).items() if key in fields}


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _given(value: Any) -> Any:
    return None if value is msgspec.UNSET else value
