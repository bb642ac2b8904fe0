"""A restarted gateway process still knows every job: it replays mova.job-state and mova.events at startup.
Runs the real entry point (`python -m movakit.services.gateway.main`) as a subprocess, stopped with SIGTERM."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from movakit.api.v1 import common_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc
from movakit.loading.demo import default_demo_checkpoint
from movakit.runtime import kafka as mkafka
from movakit.runtime.grpc_server import check_health
from movakit.runtime.localstack import free_port, start_tansu
from movakit.runtime.topics import TOPIC_ENHANCE, TOPIC_EVENTS, ensure_topics

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def start_process(kafka: str, s3_config, port: int, log_path: Path, *extra: str) -> subprocess.Popen:
    argv = [
        sys.executable, "-m", "movakit.services.gateway.main", "--listen", f"127.0.0.1:{port}",
        "--http-listen", f"127.0.0.1:{free_port()}", "--kafka-bootstrap", kafka,
        "--s3-endpoint", s3_config.endpoint, "--s3-access-key", s3_config.access_key,
        "--s3-secret-key", s3_config.secret_key, "--s3-bucket", s3_config.bucket,
        "--checkpoint", str(default_demo_checkpoint()), *extra,  # its configs: any multiple-of-16 size
    ]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not check_health(f"127.0.0.1:{port}"):
        assert process.poll() is None, f"gateway exited: {log_path.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "gateway did not become healthy"
        time.sleep(0.2)
    return process


def console_spans(text: str) -> list[dict]:
    """The spans a ConsoleSpanExporter printed (pretty JSON objects between the one-line JSON log records)."""
    decoder = json.JSONDecoder()
    spans, index = [], text.find("{\n")
    while index != -1:
        span, end = decoder.raw_decode(text, index)
        spans.append(span)
        index = text.find("{\n", end)
    return spans


def stop_process(process: subprocess.Popen) -> int:
    process.terminate()
    return process.wait(timeout=30)


def event(job_id: str, **kind) -> events_pb2.JobEvent:
    ts = Timestamp()
    ts.GetCurrentTime()
    return events_pb2.JobEvent(job_id=job_id, time=ts, source="test", **kind)


def test_restarted_gateway_keeps_jobs_keys_and_progress(tmp_path, s3_config, tokens_file, tenant_channel, sealer,
                                                        kafka_secret):
    broker = start_tansu(free_port(), tmp_path / "tansu")
    try:
        ensure_topics(broker.address)
        port = free_port()
        log_path = tmp_path / "gateway.log"
        auth = ("--tokens-file", tokens_file, "--kafka-secret", kafka_secret)
        first = start_process(broker.address, s3_config, port, log_path, *auth, "--otel-exporter", "console")
        try:
            with tenant_channel(f"127.0.0.1:{port}") as ch:
                stub = gateway_pb2_grpc.JobServiceStub(ch)
                params = common_pb2.GenerationParams(prompt="restart me", height=32, width=32, num_frames=5,
                                                     num_inference_steps=4)
                running = stub.Submit(gateway_pb2.SubmitRequest(params=params, idempotency_key="restart-1"), timeout=10)
                cancelled = stub.Submit(gateway_pb2.SubmitRequest(params=params), timeout=10)
                stub.Cancel(gateway_pb2.CancelJobRequest(job_id=cancelled.job_id), timeout=10)
                producer = mkafka.make_producer(broker.address, sealer)
                mkafka.publish(producer, TOPIC_EVENTS, running.job_id, event(
                    running.job_id, stage_started=events_pb2.StageStarted(stage=common_pb2.STAGE_DENOISE)))
                mkafka.publish(producer, TOPIC_EVENTS, running.job_id, event(
                    running.job_id, denoise_step=events_pb2.DenoiseStep(step=3, total=4, eta_s=1.5)))
                for _ in range(100):  # until the first gateway has folded the events in
                    if stub.Get(gateway_pb2.GetJobRequest(job_id=running.job_id), timeout=5).step == 3:
                        break
                    time.sleep(0.1)
        finally:
            assert stop_process(first) == 0

        # One trace per job: the Submit RPC's span is the parent of the Kafka publishes, and the trace context
        # rides in the headers of the task the first stage will read.
        tasks = mkafka.read_to_end(broker.address, TOPIC_ENHANCE, events_pb2.EnhanceTask, sealer)
        (_, task, record), = [r for r in tasks if r[0] == running.job_id]
        trace_id = dict(record.headers)["traceparent"].decode().split("-")[1]
        spans = [sp for sp in console_spans(log_path.read_text()) if sp["context"]["trace_id"] == "0x" + trace_id]
        names = {sp["name"] for sp in spans}
        assert "/movakit.api.v1.JobService/Submit" in names
        assert {"mova.job-state publish", "mova.events publish", "mova.enhance publish"} <= names
        assert task.params == running.job.params

        second = start_process(broker.address, s3_config, port, log_path, *auth)
        try:
            with tenant_channel(f"127.0.0.1:{port}") as ch:
                stub = gateway_pb2_grpc.JobServiceStub(ch)
                job = stub.Get(gateway_pb2.GetJobRequest(job_id=running.job_id), timeout=5)
                assert job.state == common_pb2.JOB_STATE_RUNNING
                assert (job.stage, job.step, job.total_steps) == (common_pb2.STAGE_DENOISE, 3, 4)
                assert job.params == running.job.params
                other = stub.Get(gateway_pb2.GetJobRequest(job_id=cancelled.job_id), timeout=5)
                assert other.state == common_pb2.JOB_STATE_CANCELLING and other.cancel_requested
                again = stub.Submit(gateway_pb2.SubmitRequest(params=params, idempotency_key="restart-1"), timeout=10)
                assert again.existing and again.job_id == running.job_id
                params.seed = 99  # the key's request is known after the restart: a different one is refused
                with pytest.raises(grpc.RpcError) as conflict:
                    stub.Submit(gateway_pb2.SubmitRequest(params=params, idempotency_key="restart-1"), timeout=10)
                assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
                assert "idempotency_key: 'restart-1'" in conflict.value.details()
                listed = {j.job_id for j in stub.List(gateway_pb2.ListJobsRequest(), timeout=5).jobs}
                assert {running.job_id, cancelled.job_id} <= listed
                # The history was rebuilt too, and the job still finishes.
                mkafka.publish(producer, TOPIC_EVENTS, running.job_id, event(
                    running.job_id, succeeded=events_pb2.Succeeded()))
                kinds = [e.WhichOneof("kind")
                         for e in stub.Watch(gateway_pb2.WatchJobRequest(job_id=running.job_id), timeout=30)]
                assert kinds == ["queued", "dispatched", "stage_started", "denoise_step", "succeeded"]
            producer.close()
        finally:
            assert stop_process(second) == 0
    finally:
        broker.stop()
