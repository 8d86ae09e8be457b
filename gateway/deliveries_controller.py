"""/v1/deliveries: one webhook delivery with every attempt, and resending it."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from ackflow.db.queries import sql
from ackflow.errors import Conflict, NotFound
from gateway.auth import current_tenant, require_api_key
from gateway.services import GatewayServices
from gateway.webhook_schemas import Attempt, DeliveryDetail, delivery_from_row


class DeliveriesController(Controller):
    """Deliveries of the authenticated tenant."""

    path = "/v1/deliveries"
    guards = [require_api_key]
    tags = ["webhooks"]

    @get("/{delivery_id:uuid}", summary="A delivery and all its attempts")
    async def read(
        self,
        delivery_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        services: NamedDependency[GatewayServices],
    ) -> DeliveryDetail:
        tenant_id = current_tenant(request)
        row = await services.pool.fetchrow(sql("get_delivery"), delivery_id, tenant_id)
        if row is None:
            raise NotFound(f"delivery {delivery_id} does not exist")
        attempts = [
            msgspec.convert(dict(a), type=Attempt)
            for a in await services.pool.fetch(sql("delivery_attempts"), delivery_id)
        ]
        return msgspec.convert(
            {**delivery_from_row(row), "attempt_log": attempts}, type=DeliveryDetail, from_attributes=True
        )

    @post("/{delivery_id:uuid}/retry", status_code=202, summary="Resend a delivery now")
    async def retry(
        self,
        delivery_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        services: NamedDependency[GatewayServices],
    ) -> Response[dict[str, Any]]:
        """One attempt now, with the same webhook-id and body; a delivery on its retry schedule keeps it."""
        tenant_id = current_tenant(request)
        if await services.pool.fetchval(sql("requeue_delivery"), delivery_id, tenant_id) is None:
            if await services.pool.fetchval(sql("get_delivery"), delivery_id, tenant_id) is None:
                raise NotFound(f"delivery {delivery_id} does not exist")
            raise Conflict(f"delivery {delivery_id} is being attempted right now; retry after it finishes")
        location = f"/v1/deliveries/{delivery_id}"
        return Response({"delivery_id": str(delivery_id), "links": {"delivery": location}}, status_code=202)
