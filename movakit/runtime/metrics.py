"""Prometheus metrics of every service: OpenTelemetry instruments, exported on a per-service /metrics endpoint.

The instruments are module globals, usable before `setup_metrics` (they record nothing until a service's main calls
it: OpenTelemetry's API forwards them to the provider set later). Names as Prometheus shows them (the exporter turns
dots into underscores and adds the unit):

  mova_queue_lag                        gauge      topic, group   records behind the end of the topic, per consumer group
  mova_jobs                             gauge      state          jobs the gateway knows, by state (queued, running, ...)
  mova_stage_duration_seconds           histogram  stage, outcome one stage task (outcome: ok, skipped, failed, cancelled)
  mova_denoise_step_duration_seconds    histogram  expert         one denoise step, both guidance branches
  mova_model_load_duration_seconds      histogram  components     loading a service's checkpoint components
  mova_device_memory_bytes              gauge      device, kind   torch allocated/reserved on CUDA; the process RSS on cpu
  mova_adapter_cache_requests_total     counter    result         LoRA adapter cache lookups (hit, miss)
  mova_grpc_errors_total                counter    method, code   RPCs that ended in an error status

The endpoint is a plain HTTP server (prometheus_client) on the service's metrics_listen setting, 127.0.0.1 by
default; docs/stack.md "Metrics" lists the default ports and the dashboard / KEDA queries that use these names.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable

import grpc
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

log = logging.getLogger("movakit.metrics")

# The default /metrics port of each service (its settings' metrics_listen = 127.0.0.1:<port> unless set).
METRICS_PORTS = {"gateway": 9460, "prompt-enhancer": 9461, "encoder": 9462, "denoiser": 9463, "decoder": 9464}

_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300, 600, 1200, 3600)
_meter = metrics.get_meter("movakit")
_lock = threading.Lock()
_queue_lag: dict[tuple[str, str], int] = {}  # (topic, group) -> records behind
_job_counts: Callable[[], dict[str, int]] | None = None  # the gateway's jobs by state


def _observe_queue_lag(options: CallbackOptions) -> Iterable[Observation]:  # noqa: ARG001
    with _lock:
        lags = dict(_queue_lag)
    return [Observation(lag, {"topic": topic, "group": group}) for (topic, group), lag in lags.items()]


def _observe_jobs(options: CallbackOptions) -> Iterable[Observation]:  # noqa: ARG001
    source = _job_counts
    return [] if source is None else [Observation(n, {"state": state}) for state, n in source().items()]


def _observe_device_memory(options: CallbackOptions) -> Iterable[Observation]:  # noqa: ARG001
    out = [Observation(_rss_bytes(), {"device": "cpu", "kind": "rss"})]
    torch = sys.modules.get("torch")  # CUDA memory only where torch runs (not in the gateway, which never imports it)
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        for index in range(torch.cuda.device_count()):
            out.append(Observation(torch.cuda.memory_allocated(index), {"device": f"cuda:{index}", "kind": "allocated"}))
            out.append(Observation(torch.cuda.memory_reserved(index), {"device": f"cuda:{index}", "kind": "reserved"}))
    return out


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


STAGE_DURATION = _meter.create_histogram("mova.stage.duration", unit="s", description="time of one stage task",
                                         explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS)
DENOISE_STEP_DURATION = _meter.create_histogram(
    "mova.denoise.step.duration", unit="s", description="time of one denoise step (both guidance branches)",
    explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS)
MODEL_LOAD_DURATION = _meter.create_histogram(
    "mova.model.load.duration", unit="s", description="time to load a service's checkpoint components",
    explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS)
ADAPTER_CACHE_REQUESTS = _meter.create_counter(
    "mova.adapter.cache.requests", description="LoRA adapter cache lookups; result=hit or miss")
GRPC_ERRORS = _meter.create_counter("mova.grpc.errors", description="RPCs that ended in an error status")
_meter.create_observable_gauge("mova.queue.lag", callbacks=[_observe_queue_lag],
                               description="records of a topic not yet consumed by a consumer group")
_meter.create_observable_gauge("mova.jobs", callbacks=[_observe_jobs], description="jobs by state")
_meter.create_observable_gauge("mova.device.memory", unit="By", callbacks=[_observe_device_memory],
                               description="device memory in use")


def record_adapter_cache(hit: bool) -> None:
    """Count one adapter cache lookup (the LoRA adapter cache calls this)."""
    ADAPTER_CACHE_REQUESTS.add(1, {"result": "hit" if hit else "miss"})


def set_queue_lag(group: str, lags: dict[str, int]) -> None:
    """The lag of each topic `group` consumes, as the consumer measured it (replaces the group's earlier values)."""
    with _lock:
        for key in [k for k in _queue_lag if k[1] == group]:
            del _queue_lag[key]
        _queue_lag.update({(topic, group): lag for topic, lag in lags.items()})


def set_job_counts(source: Callable[[], dict[str, int]]) -> None:
    """Where the `mova_jobs` gauge reads the jobs by state (the gateway's job store)."""
    global _job_counts
    _job_counts = source


def metrics_address(setting: str, service: str) -> str:
    """The endpoint of a metrics_listen setting: "" -> 127.0.0.1:<METRICS_PORTS[service]>, "none" -> no endpoint."""
    if setting == "none":
        return ""
    return setting or f"127.0.0.1:{METRICS_PORTS[service]}"


class GrpcErrorCounter(grpc.ServerInterceptor):
    """Counts every RPC that ends in a status other than OK in mova_grpc_errors_total (method, code); an exception
    that escapes a handler counts as UNKNOWN, as gRPC reports it."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_counted_unary(handler.unary_unary, method))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_counted_stream(handler.unary_stream, method))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=_counted_unary(handler.stream_unary, method))
        return handler._replace(stream_stream=_counted_stream(handler.stream_stream, method))


def _count_error(method: str, context: grpc.ServicerContext, failed: bool) -> None:
    code = context.code()
    if code is None and failed:
        code = grpc.StatusCode.UNKNOWN
    if code is not None and code != grpc.StatusCode.OK:
        GRPC_ERRORS.add(1, {"method": method, "code": code.name})


def _counted_unary(behavior, method: str):
    def counted(request, context):
        try:
            response = behavior(request, context)
        except BaseException:
            _count_error(method, context, failed=True)
            raise
        _count_error(method, context, failed=False)
        return response
    return counted


def _counted_stream(behavior, method: str):
    def counted(request, context):
        try:
            yield from behavior(request, context)
        except BaseException:
            _count_error(method, context, failed=True)
            raise
        _count_error(method, context, failed=False)
    return counted


def setup_metrics(service: str, listen: str) -> int | None:
    """Install the meter provider with a Prometheus reader and serve /metrics on `listen` (host:port, "" = no
    endpoint); returns the bound port. A port already taken is logged and the service runs without the endpoint:
    metrics are not worth failing a service for. One provider per process: a second call keeps the first one."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from prometheus_client import start_http_server

    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        provider = MeterProvider(resource=Resource.create({"service.name": service}),
                                 metric_readers=[PrometheusMetricReader(scope_info_enabled=False)])
        metrics.set_meter_provider(provider)
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    try:
        server, _thread = start_http_server(int(port), addr=host.strip("[]"))
    except OSError as exc:
        log.error("metrics endpoint not started", extra={"fields": {"listen": listen, "error": str(exc)}})
        return None
    bound = server.server_address[1]
    log.info("metrics serving", extra={"fields": {"service": service, "address": f"{host}:{bound}"}})
    return bound
