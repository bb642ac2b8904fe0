"""movakit.runtime.metrics: the gRPC error counter on a real in-process server, the settings that place the
/metrics endpoint, the gateway's jobs-by-state source and the endpoint itself."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from movakit.api.v1 import common_pb2
from movakit.runtime import metrics
from movakit.runtime.grpc_server import serve
from movakit.runtime.localstack import free_port
from movakit.runtime.settings import SettingsError
from movakit.services.encoder.settings import EncoderSettings
from movakit.services.gateway.job_store import JobStore


@pytest.fixture(scope="module")
def endpoint():
    port = metrics.setup_metrics("unit-test", "127.0.0.1:0")
    assert port is not None
    return f"127.0.0.1:{port}"


def samples(endpoint: str, name: str) -> dict[tuple, float]:
    with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=10) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    return {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name}


def test_grpc_errors_are_counted_by_method_and_code(endpoint):
    def invalid(request, context):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "prompt: must not be empty")

    def crash(request, context):
        raise RuntimeError("boom")

    def stream(request, context):
        yield b"one"
        context.abort(grpc.StatusCode.NOT_FOUND, "job: no such job")

    handlers = {"Invalid": grpc.unary_unary_rpc_method_handler(invalid),
                "Crash": grpc.unary_unary_rpc_method_handler(crash),
                "Ok": grpc.unary_unary_rpc_method_handler(lambda request, context: request),
                "Stream": grpc.unary_stream_rpc_method_handler(stream)}

    def add(server: grpc.Server) -> list[str]:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Metrics", handlers),))
        return []

    port = free_port()
    server = serve("unit-test", add, f"127.0.0.1:{port}", handle_signals=False)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            for method, code in (("Invalid", grpc.StatusCode.INVALID_ARGUMENT), ("Crash", grpc.StatusCode.UNKNOWN)):
                with pytest.raises(grpc.RpcError) as info:
                    channel.unary_unary(f"/test.Metrics/{method}")(b"x", timeout=10)
                assert info.value.code() == code
            assert channel.unary_unary("/test.Metrics/Ok")(b"x", timeout=10) == b"x"
            with pytest.raises(grpc.RpcError):
                list(channel.unary_stream("/test.Metrics/Stream")(b"x", timeout=10))
    finally:
        server.stop(0)
    errors = samples(endpoint, "mova_grpc_errors_total")
    assert errors[(("code", "INVALID_ARGUMENT"), ("method", "/test.Metrics/Invalid"))] == 1
    assert errors[(("code", "UNKNOWN"), ("method", "/test.Metrics/Crash"))] == 1
    assert errors[(("code", "NOT_FOUND"), ("method", "/test.Metrics/Stream"))] == 1
    assert not any(dict(labels)["method"] == "/test.Metrics/Ok" for labels in errors)


def test_adapter_cache_counter_and_queue_lag(endpoint):
    metrics.record_adapter_cache(hit=True)
    metrics.record_adapter_cache(hit=True)
    metrics.record_adapter_cache(hit=False)
    metrics.set_queue_lag("mova-test", {"mova.test": 7})
    metrics.set_queue_lag("mova-test", {"mova.test": 2})  # replaces the group's earlier reading
    cache = samples(endpoint, "mova_adapter_cache_requests_total")
    assert (cache[(("result", "hit"),)], cache[(("result", "miss"),)]) == (2, 1)
    assert samples(endpoint, "mova_queue_lag")[(("group", "mova-test"), ("topic", "mova.test"))] == 2


def test_job_counts_by_state(endpoint):
    store = JobStore()
    for job_id, state in (("a", common_pb2.JOB_STATE_QUEUED), ("b", common_pb2.JOB_STATE_QUEUED),
                          ("c", common_pb2.JOB_STATE_SUCCEEDED)):
        store.put(common_pb2.Job(job_id=job_id, state=state))
    assert store.counts_by_state() == {"queued": 2, "succeeded": 1}
    metrics.set_job_counts(store.counts_by_state)
    assert samples(endpoint, "mova_jobs") == {(("state", "queued"),): 2, (("state", "succeeded"),): 1}


def test_metrics_listen_settings():
    assert metrics.metrics_address("", "encoder") == f"127.0.0.1:{metrics.METRICS_PORTS['encoder']}"
    assert metrics.metrics_address("none", "encoder") == ""
    assert metrics.metrics_address("0.0.0.0:9999", "gateway") == "0.0.0.0:9999"
    keys = {"MOVA_ENCODER_S3_ACCESS_KEY": "k", "MOVA_ENCODER_S3_SECRET_KEY": "s",  # required settings
            "MOVA_ENCODER_KAFKA_SECRET": "x" * 32}
    for env in ("MOVA_ENCODER_METRICS_LISTEN", "MOVA_ENCODER_TRITON_URL"):
        with pytest.raises(SettingsError, match=env):
            EncoderSettings.load([], {**keys, env: "no-port"})
    assert EncoderSettings.load([], {**keys, "MOVA_ENCODER_TRITON_URL": "triton:8001"}).triton_url == "triton:8001"


def test_a_taken_metrics_port_does_not_stop_the_service(endpoint):
    assert metrics.setup_metrics("unit-test", endpoint) is None  # logged, not raised
    assert samples(endpoint, "mova_device_memory_bytes")[(("device", "cpu"), ("kind", "rss"))] > 0
