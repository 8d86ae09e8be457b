"""The accept path's ceiling: a bare Litestar + asyncpg endpoint doing one equivalent INSERT.

No auth, no rate limit, no outbox, no event row: just the request body decoded with msgspec and
one INSERT of a request-shaped row into a plain table, answered `202` with a small JSON body. It is
served by uvicorn with the same settings as `ackflow gateway` (see ackflow.roles.run_gateway), and
its pool is built by the same `create_pool`, so the gap between the two is what ackflow adds.

Run as `python -m bench.bare_app` with BENCH_DATABASE_URL and BENCH_PORT set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, post
from litestar.datastructures import State

from ackflow.db.pool import create_pool
from ackflow.ids import new_request_id
from bench.serve import serve_on_bench_port

TABLE_DDL = """
CREATE TABLE IF NOT EXISTS bare_requests (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL,
    status      text NOT NULL,
    version     integer NOT NULL DEFAULT 1,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
)
"""
INSERT = """
INSERT INTO bare_requests (id, kind, status, version, payload) VALUES ($1, $2, 'INIT', 1, $3::jsonb)
RETURNING id, kind, status, version, created_at
"""


class CreateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The same body as POST /v1/requests takes."""

    kind: str
    payload: Any = None


class Accepted(msgspec.Struct):
    id: str
    kind: str
    status: str
    version: int
    created_at: datetime


@post("/v1/requests", status_code=202)
async def accept(data: CreateRequest, state: State) -> Accepted:
    """Insert one row and answer 202."""
    row = await state.pool.fetchrow(INSERT, new_request_id(), data.kind, data.payload)
    return Accepted(str(row["id"]), row["kind"], row["status"], row["version"], row["created_at"])


def create_app(database_url: str, pool_size: int = 10) -> Litestar:
    """The bare app, with its pool opened and closed by the lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool: asyncpg.Pool = await create_pool(database_url, size=pool_size)
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    return Litestar(route_handlers=[accept], lifespan=[lifespan], openapi_config=None)


def main() -> None:
    """Serve the bare endpoint on 127.0.0.1:$BENCH_PORT until SIGINT/SIGTERM."""
    serve_on_bench_port(create_app(os.environ["BENCH_DATABASE_URL"]), lifespan="on", timeout_graceful_shutdown=3)


if __name__ == "__main__":
    main()
