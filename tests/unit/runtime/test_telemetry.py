"""Trace context through Kafka headers, and the settings checks of setup_telemetry."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from movakit.runtime import telemetry


def test_headers_carry_the_current_trace():
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("job") as span:
        headers = telemetry.inject_headers()
        trace_id = span.get_span_context().trace_id
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)
    assert dict(headers)["traceparent"].decode().split("-")[1] == format(trace_id, "032x")
    context = telemetry.extract_context(headers)
    assert trace.get_current_span(context).get_span_context().trace_id == trace_id
    with tracer.start_as_current_span("stage", context=context) as child:
        assert child.get_span_context().trace_id == trace_id


def test_no_headers_means_a_fresh_trace():
    context = telemetry.extract_context(None)
    assert not trace.get_current_span(context).get_span_context().is_valid
    assert telemetry.extract_context([("traceparent", None)]) is not None


def test_bad_exporter_settings_are_refused():
    with pytest.raises(ValueError, match="exporter: expected one of"):
        telemetry.setup_telemetry("x", "zipkin")
