"""OpenTelemetry for every service: tracer provider setup, W3C trace context in Kafka headers, the gRPC server
interceptor.

One trace per job: the gateway starts the job's root span on Submit, `kafka.publish` injects the current
context into the record headers, each stage continues it with `extract_context(record.headers)`, and the
object store opens a child span per S3 call.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

EXPORTERS = ("otlp", "console", "memory", "none")


@dataclass(frozen=True)
class Telemetry:
    service_name: str
    provider: TracerProvider
    # Set only for exporter="memory": the finished spans, for tests.
    memory: InMemorySpanExporter | None


_ACTIVE: Telemetry | None = None


def setup_telemetry(service_name: str, exporter: str, otlp_endpoint: str | None = None) -> Telemetry:
    """Installs the global tracer provider for this process and returns it.

    exporter: "otlp" (OTLP/gRPC to `otlp_endpoint`, e.g. "127.0.0.1:4317"), "console" (spans as JSON on stdout),
    "memory" (kept in an InMemorySpanExporter) or "none" (spans are created but dropped). OpenTelemetry allows
    one global provider per process: a second call returns the first setup unchanged.
    """
    global _ACTIVE
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter: expected one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if _ACTIVE is not None:
        return _ACTIVE
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    memory = None
    if exporter == "otlp":
        if not otlp_endpoint:
            raise ValueError("otlp_endpoint: required when exporter is 'otlp'")
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)))
    elif exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(service_name=service_name)))
    elif exporter == "memory":
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
    trace.set_tracer_provider(provider)
    _ACTIVE = Telemetry(service_name=service_name, provider=provider, memory=memory)
    return _ACTIVE


def shutdown_telemetry() -> None:
    """Flushes and stops the exporters (call before the process exits)."""
    if _ACTIVE is not None:
        _ACTIVE.provider.shutdown()


def tracer(name: str = "movakit") -> trace.Tracer:
    return trace.get_tracer(name)


def inject_headers() -> list[tuple[str, bytes]]:
    """The current trace context as Kafka record headers (W3C traceparent/tracestate)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(key, value.encode("utf-8")) for key, value in carrier.items()]


def extract_context(headers: list[tuple[str, bytes]] | None) -> otel_context.Context:
    """The trace context carried in Kafka record headers (an empty context when there is none)."""
    carrier = {key: value.decode("utf-8", "replace") for key, value in headers or [] if value is not None}
    return propagate.extract(carrier)


def grpc_server_interceptors() -> list[grpc.ServerInterceptor]:
    """Interceptors that open a SERVER span per RPC, continuing the caller's trace."""
    return [server_interceptor()]
