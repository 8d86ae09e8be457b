"""Recording the spans ackflow makes, in memory, for tests that check traces.

OpenTelemetry's global tracer provider can be set once per process, so it is set once, the first
time a test asks for `spans`, to an SDK provider whose processor keeps finished spans in memory
only while a test records: tests that do not trace keep nothing. From then on tracing is on in this
process (ackflow.tracing.tracing_enabled): roles started afterwards make spans, recorded or not.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


class _WhileRecording(SimpleSpanProcessor):
    """Exports a finished span only while a test records."""

    recording = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.recording:
            super().on_end(span)


class SpanRecorder:
    """The finished spans of the test under way."""

    def __init__(self) -> None:
        self._exporter = InMemorySpanExporter()
        self._processor = _WhileRecording(self._exporter)
        provider = TracerProvider()
        provider.add_span_processor(self._processor)
        trace.set_tracer_provider(provider)

    def start(self) -> None:
        self._exporter.clear()
        self._processor.recording = True

    def stop(self) -> None:
        self._processor.recording = False
        self._exporter.clear()

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self._exporter.get_finished_spans()

    def clear(self) -> None:
        self._exporter.clear()


_recorder: SpanRecorder | None = None


def span_recorder() -> SpanRecorder:
    """The process's one recorder (installing the provider the first time)."""
    global _recorder
    if _recorder is None:
        if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            raise RuntimeError("a tracer provider is installed already: the spans could not be recorded")
        _recorder = SpanRecorder()
    return _recorder


@pytest.fixture
def spans() -> Iterator[SpanRecorder]:
    """Spans finished during this test. Ask for it before any role starts, so that they trace."""
    recorder = span_recorder()
    recorder.start()
    try:
        yield recorder
    finally:
        recorder.stop()
