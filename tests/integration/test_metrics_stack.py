"""Metrics from the real stack: `stack.up` with tritonserver (the `mova stack up --triton` path), one tiny job, then
every service's /metrics endpoint scraped over HTTP and parsed: the values match what the job did."""

from __future__ import annotations

import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from movakit.api.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from movakit.runtime import stack
from movakit.runtime.localstack import free_port
from movakit.runtime.topics import TOPIC_DENOISE, TOPIC_ENCODE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 3
SERVICES = ("gateway", "prompt-enhancer", "encoder", "denoiser", "decoder")


@pytest.fixture(scope="module")
def triton_stack(tmp_path_factory):
    ports = set()
    while len(ports) < 8:
        ports.add(free_port())
    kafka, s3, gateway, triton, *stages = sorted(ports)
    cfg = stack.StackConfig(state_dir=tmp_path_factory.mktemp("metrics-stack"), kafka_port=kafka, s3_port=s3,
                            gateway_port=gateway, stage_ports=tuple(stages), metrics_ports=False, triton=True,
                            triton_port=triton)
    addresses = stack.up(cfg, log=lambda *_: None)
    yield cfg, addresses
    stack.down(cfg.state_dir)


def scrape(address: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """name -> [(labels, value)] of every sample at http://<address>/metrics."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples, name: str, **labels: str) -> float:
    matching = [v for lbls, v in samples.get(name, []) if all(lbls.get(k) == want for k, want in labels.items())]
    assert len(matching) == 1, (name, labels, samples.get(name))
    return matching[0]


def test_metrics_after_a_job_through_triton(triton_stack):
    cfg, addresses = triton_stack
    with grpc.insecure_channel(addresses["gateway"]) as channel:
        jobs = gateway_pb2_grpc.JobServiceStub(channel)
        params = common_pb2.GenerationParams(prompt="A cat plays a tiny piano.", height=32, width=32, num_frames=5,
                                             fps=8.0, num_inference_steps=STEPS, guidance_scale=2.0, seed=3)
        job_id = jobs.Submit(gateway_pb2.SubmitRequest(params=params), timeout=30).job_id
        for event in jobs.Watch(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=240):
            if event.WhichOneof("kind") in ("succeeded", "failed", "cancelled"):
                break
        assert event.WhichOneof("kind") == "succeeded", event
        with pytest.raises(grpc.RpcError) as bad:  # an empty prompt: INVALID_ARGUMENT, counted by the gateway
            jobs.Submit(gateway_pb2.SubmitRequest(params=common_pb2.GenerationParams(prompt="")), timeout=30)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    gateway = scrape(addresses["metrics-gateway"])
    assert value(gateway, "mova_jobs", state="succeeded") == 1
    assert value(gateway, "mova_grpc_errors_total", method="/movakit.api.v1.JobService/Submit",
                 code="INVALID_ARGUMENT") == 1

    denoiser = scrape(addresses["metrics-denoiser"])
    # one sample per expert that ran (the tiny checkpoint's boundary decides which): the counts add up to the steps
    assert sum(v for _, v in denoiser["mova_denoise_step_duration_seconds_count"]) == STEPS
    assert sum(v for _, v in denoiser["mova_denoise_step_duration_seconds_sum"]) > 0
    assert value(denoiser, "mova_device_memory_bytes", device="cpu", kind="rss") > 0

    stages = {"prompt-enhancer": "enhance", "encoder": "encode", "denoiser": "denoise", "decoder": "decode"}
    for service, stage in stages.items():
        samples = scrape(addresses[f"metrics-{service}"])
        assert value(samples, "mova_stage_duration_seconds_count", stage=stage, outcome="ok") == 1, service
        assert value(samples, "mova_stage_duration_seconds_sum", stage=stage, outcome="ok") > 0, service
    # the encoder loads only the video VAE: Triton serves the text encoder, and answered both prompts of the job
    assert value(scrape(addresses["metrics-encoder"]), "mova_model_load_duration_seconds_count",
                 components="video_vae") == 1
    assert value(scrape(addresses["metrics-decoder"]), "mova_model_load_duration_seconds_count",
                 components="video_vae,audio_vae") == 1
    triton = scrape(addresses["metrics-triton"])
    assert value(triton, "nv_inference_request_success_total", model="umt5_encoder", version="1") == 2

    deadline = time.monotonic() + 30  # lag is read at most once a second, after a poll
    while True:
        lags = {topic: [v for labels, v in scrape(addresses[f"metrics-{service}"]).get("mova_queue_lag", [])
                        if labels["topic"] == topic]
                for service, topic in (("encoder", TOPIC_ENCODE), ("denoiser", TOPIC_DENOISE))}
        if lags == {TOPIC_ENCODE: [0], TOPIC_DENOISE: [0]} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert lags == {TOPIC_ENCODE: [0], TOPIC_DENOISE: [0]}
