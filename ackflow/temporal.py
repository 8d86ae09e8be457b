"""Connecting to Temporal, tracing its calls, and the search attributes operators filter by in the Temporal UI."""

from __future__ import annotations

import asyncio
import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey

from ackflow.contracts import (
    SEARCH_ATTRIBUTE_KIND,
    SEARCH_ATTRIBUTE_KINDS,
    SEARCH_ATTRIBUTE_REQUEST_IDS,
    SEARCH_ATTRIBUTE_TENANT,
    SEARCH_ATTRIBUTE_TENANTS,
    SEARCH_ATTRIBUTE_TYPES,
)
from ackflow.errors import ServiceUnavailable
from ackflow.settings import Settings
from ackflow.tracing import tracing_enabled

log = logging.getLogger(__name__)

# Every workflow carries its tenant and kind; a batch, which may hold several, carries them as lists
# beside every request id it runs (find a request's workflow by `AckflowRequestIds = "<id>"`).
TENANT_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_TENANT)
KIND_KEY = SearchAttributeKey.for_keyword(SEARCH_ATTRIBUTE_KIND)
REQUEST_IDS_KEY = SearchAttributeKey.for_keyword_list(SEARCH_ATTRIBUTE_REQUEST_IDS)
TENANTS_KEY = SearchAttributeKey.for_keyword_list(SEARCH_ATTRIBUTE_TENANTS)
KINDS_KEY = SearchAttributeKey.for_keyword_list(SEARCH_ATTRIBUTE_KINDS)
_INDEXED_TYPES = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
}
SEARCH_ATTRIBUTES = {name: _INDEXED_TYPES[kind] for name, kind in SEARCH_ATTRIBUTE_TYPES.items()}


async def connect_temporal(settings: Settings) -> Client:
    """A client for the configured namespace, or ServiceUnavailable naming TEMPORAL_ADDRESS."""
    try:
        return await asyncio.wait_for(
            Client.connect(settings.temporal_address, namespace=settings.temporal_namespace),
            timeout=settings.connect_timeout_seconds,
        )
    except (TimeoutError, RuntimeError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ServiceUnavailable(
            f"cannot reach Temporal at {settings.temporal_address} (TEMPORAL_ADDRESS): {reason}"
        ) from None


def traced(client: Client) -> Client:
    """The client with temporalio's OpenTelemetry interceptor when tracing is on (ackflow/tracing.py):
    its workflow starts, and the workers built on it, make StartWorkflow, RunWorkflow, StartActivity
    and RunActivity spans, carried in Temporal's headers. The same client as given when tracing is off
    (no interceptor: nothing to pay), or when it has the interceptor already."""
    if not tracing_enabled():
        return client
    from temporalio.contrib.opentelemetry import TracingInterceptor

    config = client.config()
    if any(isinstance(i, TracingInterceptor) for i in config["interceptors"]):
        return client
    config["interceptors"] = [*config["interceptors"], TracingInterceptor()]
    return Client(**config)


async def ensure_search_attributes(client: Client) -> None:
    """Register ackflow's search attributes if missing; warn (not fail) without permission."""
    missing: set[str] = set()
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        missing = set(SEARCH_ATTRIBUTES) - set(listed.custom_attributes)
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=client.namespace,
                    search_attributes={name: SEARCH_ATTRIBUTES[name] for name in sorted(missing)},
                )
            )
    except Exception as exc:  # an operator may have withheld the permission; workflows still run
        log.warning("could not register Temporal search attributes %s: %s", sorted(missing), exc)
