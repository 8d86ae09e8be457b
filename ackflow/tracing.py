"""OpenTelemetry traces: one trace per request, from the POST that accepted it to its last webhook.

The accept stores the W3C `traceparent` of the POST's server span with the request
(`requests.trace_context`, migration 0015), so the trace crosses the outbox, Temporal and every
restart: the relay's dispatch, the handler and each webhook attempt start their span as a child
of that stored context (`request_span`), wherever and whenever they run. Temporal's own spans
(StartWorkflow, RunWorkflow, StartActivity, RunActivity) come from temporalio's TracingInterceptor
(ackflow.temporal.traced); a span whose Temporal parent belongs to another trace (a batch of
several requests, a webhook retry workflow) is parented on the request and links to it.

Nothing is exported by default, and nothing costs anything: with no OTLP endpoint configured,
`configured_tracing` installs no provider, the API's no-op tracer is used, the gateway adds no
tracing middleware and the Temporal client no interceptor (`tracing_enabled`).

Configuration is OpenTelemetry's own standard environment variables (OTEL_EXPORTER_OTLP_ENDPOINT
or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT to export, OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*, ...), read by the SDK itself. This module reads the endpoint
variables (and OTEL_SDK_DISABLED) only to decide whether to install the SDK at all: the one
documented exception to "only settings.py reads the environment", as these are the SDK's variables,
not ackflow's, and Settings would only copy them for the SDK to read again.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

TRACER_NAME = "ackflow"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# Span attributes ackflow sets.
REQUEST_ID = "ackflow.request_id"
TENANT = "ackflow.tenant"
KIND = "ackflow.kind"
OUTCOME = "ackflow.outcome"

_PROPAGATOR = TraceContextTextMapPropagator()


def export_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces to be exported over OTLP."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def build_tracer_provider(service_name: str, environ: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """An SDK provider exporting in batches over OTLP/HTTP (configured by the OTEL_* variables), or None
    when no endpoint is configured. OTEL_SERVICE_NAME, if set, names the service instead."""
    if not export_configured(environ):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: environ.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


@contextlib.contextmanager
def configured_tracing(service_name: str) -> Iterator[TracerProvider | None]:
    """For the life of a role's process: install the exporting provider if configured (else nothing),
    and flush and shut it down when the block ends."""
    provider = build_tracer_provider(service_name)
    if provider is not None:
        trace.set_tracer_provider(provider)
        log.info("exporting traces over OTLP as %s", service_name)
    try:
        yield provider
    finally:
        if provider is not None:
            provider.shutdown()  # flushes the spans still batched


def tracing_enabled() -> bool:
    """Whether a tracer provider is installed (by configured_tracing, a test, or an embedding app)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def inject() -> str | None:
    """The current span's W3C traceparent, to store with a request; None when no valid span is current."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def extract(traceparent: str | None) -> otel_context.Context:
    """A context whose parent span is the stored `traceparent` (an empty context for none or garbage)."""
    if not traceparent:
        return otel_context.Context()
    return _PROPAGATOR.extract({"traceparent": traceparent}, context=otel_context.Context())


def span_context_of(traceparent: str | None) -> SpanContext | None:
    """The span a stored traceparent names, or None."""
    stored = trace.get_current_span(extract(traceparent)).get_span_context()
    return stored if stored.is_valid else None


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32-hex-digit trace id of a stored traceparent (what tracing back ends search by), or None."""
    stored = span_context_of(traceparent)
    return None if stored is None else trace.format_trace_id(stored.trace_id)


def links_to(trace_contexts: list[str | None]) -> list[Link]:
    """Links to the spans stored trace contexts name (those that name one)."""
    return [Link(stored) for tc in trace_contexts if (stored := span_context_of(tc)) is not None]


def start_request_span(
    name: str,
    trace_context: str | None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes = None,
    links: list[Link] | None = None,
) -> Span:
    """A span in the request's trace: a child of the current span if it is in that trace already (a
    batch of one: the handler under Temporal's RunActivity), else of the stored context, linked to
    the current span (a batch of several, a webhook retry workflow). No stored context: a child of
    the current span, as any span."""
    stored = span_context_of(trace_context)
    current = trace.get_current_span().get_span_context()
    parent: otel_context.Context | None = None
    links = list(links or [])
    if stored is not None and not (current.is_valid and current.trace_id == stored.trace_id):
        parent = extract(trace_context)
        if current.is_valid:
            links.append(Link(current))
    return tracer().start_span(name, context=parent, kind=kind, attributes=attributes, links=links)


@contextlib.contextmanager
def request_span(
    name: str,
    trace_context: str | None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes = None,
) -> Iterator[Span]:
    """`start_request_span`, current for the block and ended after it (an exception marks it an error).
    Without a provider, the no-op span and nothing else: not even the stored context is parsed."""
    if not tracing_enabled():
        yield trace.INVALID_SPAN
        return
    span = start_request_span(name, trace_context, kind=kind, attributes=attributes)
    with trace.use_span(span, end_on_exit=True):
        yield span


@contextlib.contextmanager
def in_trace_of(trace_context: str | None) -> Iterator[None]:
    """Make the stored context current for the block (the spans it starts join the request's trace);
    no change if it names no span."""
    if span_context_of(trace_context) is None:
        yield
        return
    token = otel_context.attach(extract(trace_context))
    try:
        yield
    finally:
        otel_context.detach(token)


def link_current_span_to(request_id: object, trace_context: str | None) -> None:
    """Name the request on the current span (a later GET or stream of it), linked to the request's trace."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute(REQUEST_ID, str(request_id))
    stored = span_context_of(trace_context)
    if stored is not None:
        span.add_link(stored)
