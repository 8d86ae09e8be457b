"""/v1/kinds: the kinds workers have registered, so a client (or the browser page) offers only those."""

from __future__ import annotations

import asyncpg
import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency

from ackflow.contracts import HandlerOptions
from ackflow.db.queries import sql
from gateway.auth import require_api_key
from gateway.schemas import RegisteredKind, RegisteredKinds
from gateway.services import GatewayServices


class KindsController(Controller):
    """Kinds are the workers' and the same for every tenant; reading them still needs an API key."""

    path = "/v1/kinds"
    guards = [require_api_key]
    tags = ["requests"]

    @get("/", summary="List the kinds workers handle, with their timeouts and retries")
    async def list_kinds(self, services: NamedDependency[GatewayServices]) -> RegisteredKinds:
        rows = await services.pool.fetch(sql("list_handler_kinds"))
        return RegisteredKinds(items=[_kind(row) for row in rows])


def _kind(row: asyncpg.Record) -> RegisteredKind:
    fields = dict(row)
    options = fields.pop("options")
    return RegisteredKind(**fields, options=None if options is None else msgspec.convert(options, HandlerOptions))
