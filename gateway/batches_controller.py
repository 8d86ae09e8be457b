"""POST /v1/requests/batch and GET /v1/batches/{id}: many requests accepted in one transaction.

Each item is checked as POST /v1/requests checks its body, one by one, before anything is written;
then every item that passed is accepted by the same statement, all in one transaction, with the batch
row. A bad item gets its own problem and the others are accepted, unless `atomic`: then one bad item
refuses the batch and nothing is written. Every check that could fail an item (its schema, its
controls, a NUL in its payload, its kind, its idempotency key, a busy key under `skip`) answers before
or without a write, so no item's failure can abort the transaction the others are in. The tenant's
rate limit counts the items.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import asyncpg
import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from ackflow.db.queries import sql
from ackflow.errors import BatchRejected, DomainError, InvalidInput, NotFound
from ackflow.ids import new_request_id
from ackflow.logs import bind_log_context
from ackflow.netguard import check_target
from ackflow.settings import Settings
from gateway.accepts import accepted_body, check_controls, insert_request, nul_in_payload
from gateway.auth import current_tenant, require_api_key
from gateway.bodies import require_json_body
from gateway.idempotency import IdempotencyKey, claim_on
from gateway.problems import NAMED_FIELD, domain_problem_body
from gateway.schemas import (
    AcceptedBatch,
    AcceptedRequest,
    BatchItem,
    BatchItemAnswer,
    BatchLinks,
    BatchState,
    CreateBatch,
    ItemProblem,
)
from gateway.services import GatewayServices

_AT_FIELD = re.compile(r"at `\$\.([A-Za-z_]+)")  # msgspec: "Expected `int`, got `str` - at `$.priority`"
_ITEM_FINGERPRINT = b"POST\n/v1/requests/batch item\n"  # an item's key never replays a single POST's


class BatchesController(Controller):
    """Batches of the authenticated tenant."""

    path = "/v1"
    guards = [require_api_key]
    tags = ["requests"]

    @post("/requests/batch", status_code=202, summary="Accept up to 1,000 requests at once", guards=[require_json_body])
    async def accept_batch(
        self, request: Request[Any, Any, Any], data: JSONBody[CreateBatch], services: NamedDependency[GatewayServices]
    ) -> Response[AcceptedBatch]:
        """Accept the items in one transaction; answer each item's request, or its problem, in order.
        `Location` is the batch (`GET /v1/batches/{id}`: its requests counted by status)."""
        tenant_id, settings = current_tenant(request), services.settings
        await services.rate_limiter.check(tenant_id, len(data.items))
        await services.queue_depth.check(tenant_id, len(data.items))
        checked = [await _checked(raw, settings) for raw in data.items]
        if data.atomic and any(isinstance(item, DomainError) for item in checked):
            raise BatchRejected(
                "an item is not valid and the batch is atomic: nothing was accepted", items=_failures(checked)
            )
        batch_id = new_request_id()
        keys = sorted(
            {item.concurrency_key for item in checked if isinstance(item, BatchItem) and item.concurrency_key}
        )
        async with services.pool.acquire() as connection, connection.transaction():
            if keys:
                await connection.fetchval(sql("lock_batch_keys"), tenant_id, keys)
            answers = [
                await _accept_item(connection, request, services, index, item, batch_id)
                if isinstance(item, BatchItem)
                else _problem_answer(index, item)
                for index, item in enumerate(checked)
            ]
            failed = [answer for answer in answers if answer.problem is not None]
            if failed and (data.atomic or len(failed) == len(answers)):
                raise BatchRejected(
                    "no item was accepted" if not data.atomic else "an item was refused and the batch is atomic",
                    items=[msgspec.to_builtins(answer) for answer in failed],
                )  # leaving the block rolls back whatever the others wrote
            accepted = sum(1 for answer in answers if answer.request is not None and not answer.replayed)
            await connection.execute(sql("create_submitted_batch"), batch_id, tenant_id, len(answers), accepted)
        services.outbox_waker.wake()
        body = AcceptedBatch(
            id=batch_id,
            size=len(answers),
            accepted=accepted,
            replayed=sum(1 for answer in answers if answer.replayed),
            items=answers,
            links=BatchLinks(self=f"/v1/batches/{batch_id}"),
        )
        headers = {"Location": body.links.self, "Retry-After": str(settings.retry_after_seconds)}
        return Response(body, status_code=202, headers=headers)

    @get("/batches/{batch_id:uuid}", summary="A submitted batch, its requests counted by status")
    async def read_batch(
        self, request: Request[Any, Any, Any], batch_id: FromPath[uuid.UUID], services: NamedDependency[GatewayServices]
    ) -> BatchState:
        bind_log_context(batch_id=batch_id)
        row = await services.pool.fetchrow(sql("submitted_batch"), batch_id, current_tenant(request))
        if row is None:
            raise NotFound(f"batch {batch_id} does not exist")
        return BatchState(
            id=row["id"],
            size=row["size"],
            accepted=row["accepted"],
            created_at=row["created_at"],
            counts=dict(row["counts"]),
            links=BatchLinks(self=f"/v1/batches/{batch_id}"),
        )


async def _checked(raw: dict[str, Any], settings: Settings) -> BatchItem | DomainError:
    """The item, if it passes every check POST /v1/requests makes of a body before writing; else why not."""
    try:
        item = msgspec.convert(raw, BatchItem)
    except msgspec.ValidationError as exc:
        message = str(exc)
        named = _AT_FIELD.search(message) or NAMED_FIELD.search(message)
        field = named.group(1) if named else "body"
        return InvalidInput(
            "the item does not match the schema", errors=[{"field": field, "in": "body", "message": message}]
        )
    try:
        check_controls(item, settings.max_json_depth)
        if b"\\u0000" in msgspec.json.encode(item.payload):  # found here: the statement's error would abort the batch
            raise nul_in_payload()
        if item.callback_url is not None:
            await check_target(item.callback_url, allow_private=settings.webhook_allow_private, field="callback_url")
    except DomainError as exc:
        return exc
    return item


async def _accept_item(
    connection: asyncpg.Connection,
    request: Request[Any, Any, Any],
    services: GatewayServices,
    index: int,
    item: BatchItem,
    batch_id: uuid.UUID,
) -> BatchItemAnswer:
    """One item accepted in the batch's transaction (its idempotency key claimed in it too), or the
    problem that refused it: an unknown kind or a busy key under skip writes nothing."""
    tenant_id, settings = current_tenant(request), services.settings
    try:
        claim = None
        if item.idempotency_key is not None:
            claim = await claim_on(connection, tenant_id, _item_key(item), ttl_seconds=settings.idempotency_ttl_seconds)
            if claim.replay is not None:
                replayed = msgspec.convert(claim.replay.body, AcceptedRequest)
                return BatchItemAnswer(index=index, request=replayed, replayed=True)
        row = await insert_request(connection, tenant_id, item, settings, submitted_batch_id=batch_id)
        body = accepted_body(row, request, services.capability_tokens)
        if claim is not None:
            await claim.remember(row["id"], 202, body)
        return BatchItemAnswer(index=index, request=msgspec.convert(body, AcceptedRequest))
    except DomainError as exc:
        return _problem_answer(index, exc)


def _item_key(item: BatchItem) -> IdempotencyKey:
    assert item.idempotency_key is not None
    unkeyed = msgspec.to_builtins(msgspec.structs.replace(item, idempotency_key=None))
    fingerprint = hashlib.sha256(_ITEM_FINGERPRINT + msgspec.json.encode(unkeyed, order="sorted")).digest()
    return IdempotencyKey(item.idempotency_key, fingerprint)


def _problem_answer(index: int, exc: DomainError) -> BatchItemAnswer:
    return BatchItemAnswer(index=index, problem=msgspec.convert(domain_problem_body(exc), ItemProblem))


def _failures(checked: list[BatchItem | DomainError]) -> list[dict[str, Any]]:
    return [
        msgspec.to_builtins(_problem_answer(index, item))
        for index, item in enumerate(checked)
        if isinstance(item, DomainError)
    ]
