"""Trace export: nothing unless an OTLP endpoint is configured, and then real OTLP/HTTP protobuf to it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ackflow import devstack
from ackflow.db.accept import accept_request
from ackflow.handlers import HandlerRegistry
from ackflow.settings import Settings
from ackflow.tracing import build_tracer_provider, configured_tracing, export_configured, inject
from activities.worker import register_kinds
from tests.conftest import Tenant

OTEL_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED")


class Collector:
    """An OTLP/HTTP collector on loopback, in a thread (the SDK exports from its own thread, and
    blocks while it flushes): records every POST body by path and answers 200."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, bytes]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                collector.received.append((self.path, self.headers.get("content-type", ""), body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((devstack.LOOPBACK, devstack.free_port()), Handler)
        self.url = f"http://{devstack.LOOPBACK}:{self.server.server_port}"


@pytest.fixture
def collector() -> Iterator[Collector]:
    running = Collector()
    thread = threading.Thread(target=running.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.server.shutdown()
        running.server.server_close()
        thread.join(5)


@pytest.fixture
def no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_without_an_otlp_endpoint_nothing_is_installed_nor_exported(no_otel_environment: None) -> None:
    before = trace.get_tracer_provider()
    assert not export_configured()
    with configured_tracing("ackflow-gateway") as provider:
        assert provider is None
        assert trace.get_tracer_provider() is before, "no provider was installed"


def test_otel_sdk_disabled_wins_over_an_endpoint() -> None:
    assert not export_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"})
    assert export_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"])
def test_with_an_otlp_endpoint_spans_are_exported_as_otlp_protobuf_under_the_roles_service_name(
    no_otel_environment: None, monkeypatch: pytest.MonkeyPatch, collector: Collector, variable: str
) -> None:
    endpoint = collector.url if variable == "OTEL_EXPORTER_OTLP_ENDPOINT" else f"{collector.url}/v1/traces"
    monkeypatch.setenv(variable, endpoint)
    provider = build_tracer_provider("ackflow-relay")
    assert provider is not None
    with provider.get_tracer("test").start_as_current_span("ackflow.relay.dispatch") as span:
        span.set_attribute("ackflow.request_id", "r-1")
    provider.shutdown()  # flushes, as a role does when it stops

    [(path, content_type, body)] = collector.received
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    export = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = export.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
    assert service == "ackflow-relay"
    [exported] = [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert exported.name == "ackflow.relay.dispatch"
    assert {a.key: a.value.string_value for a in exported.attributes} == {"ackflow.request_id": "r-1"}


async def test_a_request_accepted_outside_any_span_stores_no_trace_context(
    settings: Settings, pool: asyncpg.Pool, registry: HandlerRegistry, tenant: Tenant
) -> None:
    await register_kinds(pool, registry, settings.task_queue)
    assert inject() is None
    request_id = uuid.uuid4()

    await accept_request(pool, request_id, tenant.id, "echo", {}, trace_context=inject())

    assert await pool.fetchval("SELECT trace_context FROM requests WHERE id = $1", request_id) is None


def test_a_process_that_configured_no_tracing_adds_no_tracing_middleware_to_the_gateway(
    no_otel_environment: None,
) -> None:
    """In a fresh process (this one's global provider may be a test's): no provider, no plugin."""
    probe = (
        "from opentelemetry import trace\n"
        "from ackflow.tracing import configured_tracing, tracing_enabled\n"
        "from gateway.app import _tracing_plugins\n"
        "with configured_tracing('ackflow-gateway') as provider:\n"
        "    assert provider is None and not tracing_enabled() and _tracing_plugins() == []\n"
        "    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)\n"
        "print('untraced')\n"
    )
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0 and ran.stdout.strip() == "untraced", ran.stderr


def test_a_role_process_that_configures_tracing_exports_its_spans_when_it_stops(
    no_otel_environment: None, collector: Collector
) -> None:
    """As the CLI runs a role: configured_tracing installs the provider, and flushes it at the end."""
    probe = (
        "from ackflow.tracing import configured_tracing, request_span, tracing_enabled\n"
        "with configured_tracing('ackflow-worker'):\n"
        "    assert tracing_enabled()\n"
        "    with request_span('ackflow.handler echo', None):\n"
        "        pass\n"
    )
    environment = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
    ran = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False, env=environment
    )
    assert ran.returncode == 0, ran.stderr

    [(path, _, body)] = collector.received
    [resource_spans] = ExportTraceServiceRequest.FromString(body).resource_spans
    names = [s.name for scope in resource_spans.scope_spans for s in scope.spans]
    assert path == "/v1/traces" and names == ["ackflow.handler echo"]
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
    assert service == "ackflow-worker"
