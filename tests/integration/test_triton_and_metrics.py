"""The text encoder served by a REAL tritonserver and the stack's metrics, on one stack: `stack.up(triton=True)`
(the `mova stack up --triton` path: Tansu, SeaweedFS, tritonserver from PyPI nvidia-pytriton's binary on the CPU
and the five services, all on 127.0.0.1) with the tiny demo checkpoint.

Triton: the same embeddings as the in-process encoder, bit for bit, also when the dynamic batcher groups prompts;
an encode run through it stores the same tensors; bad bytes are INVALID_ARGUMENT naming PROMPT.
Metrics: one job through the stack, then every service's /metrics scraped over HTTP and parsed: the values match
what the job did (a task per stage, a denoise step observation per step, jobs by state, an error counted by code,
both prompts answered by Triton, lag 0 afterwards).
"""

from __future__ import annotations

import dataclasses
import time
import urllib.request

import grpc
import numpy as np
import pytest
import torch
import tritonclient.grpc as triton_grpc
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from movakit.api.v1 import common_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc
from movakit.loading import MovaCheckpoint
from movakit.loading.demo import default_demo_checkpoint
from movakit.runtime import stack
from movakit.runtime.auth import with_token
from movakit.runtime.localstack import free_port, free_ports
from movakit.runtime.object_store import ObjectStore
from movakit.runtime.topics import TOPIC_DENOISE, TOPIC_ENCODE
from movakit.runtime.triton_server import TEXT_ENCODER_MODEL
from movakit.runtime.tasks import direct_context
from movakit.services.encoder.servicer import EncodeHandler
from movakit.services.encoder.triton_client import TritonTextEncoder

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROMPTS = ["A cat plays a tiny piano. The audio has soft piano notes.", "",
           "naïve café &amp; <b>ünïcode</b> ✓   with   spaces", "waves " * 700]  # the last one is cut at 512 tokens
STEPS = 3


@pytest.fixture(scope="module")
def triton_stack(tmp_path_factory):
    kafka, s3, gateway, triton, *stages = free_ports(8)
    cfg = stack.StackConfig(state_dir=tmp_path_factory.mktemp("triton-stack"), kafka_port=kafka, s3_port=s3,
                            gateway_port=gateway, stage_ports=tuple(stages), metrics_ports=False, triton=True, trainer=False,
                            triton_port=triton)
    addresses = stack.up(cfg, log=lambda *_: None)
    yield cfg, addresses
    stack.down(cfg.state_dir)


@pytest.fixture(scope="module")
def models():
    return MovaCheckpoint(str(default_demo_checkpoint())).load(("text_encoder", "video_vae"), device="cpu",
                                                                dtype=torch.float32)


@pytest.fixture(scope="module")
def triton(triton_stack):
    """The stack's tritonserver (gRPC address) and a client of it."""
    _, addresses = triton_stack
    client = TritonTextEncoder(addresses["triton"], TEXT_ENCODER_MODEL, "float32", timeout_s=60.0)
    yield addresses["triton"], client
    client.close()


# ---- Triton ---------------------------------------------------------------------------------------------------
def test_triton_embeddings_equal_in_process_bit_for_bit(models, triton):
    _, client = triton
    for prompt in PROMPTS:
        assert torch.equal(client.encode([prompt]), models.text_encoder.encode([prompt])), prompt
    together = client.encode(PROMPTS)  # four requests at once: the dynamic batcher may group them
    assert together.shape == (len(PROMPTS), 512, models.text_encoder.dim)
    assert torch.equal(together, models.text_encoder.encode(PROMPTS))


def test_bad_prompt_bytes_are_invalid_argument_and_the_model_keeps_serving(models, triton):
    address, client = triton
    tensor = triton_grpc.InferInput("PROMPT", [1, 2], "UINT8")
    tensor.set_data_from_numpy(np.array([[0xFF, 0xFE]], dtype=np.uint8))
    raw = triton_grpc.InferenceServerClient(address)
    with pytest.raises(InferenceServerException, match="PROMPT: 'utf-8' codec") as info:
        raw.infer(TEXT_ENCODER_MODEL, [tensor])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert raw.is_model_ready(TEXT_ENCODER_MODEL)
    assert torch.equal(client.encode(["still here"]), models.text_encoder.encode(["still here"]))


def test_encode_job_through_triton_stores_the_in_process_tensors(models, triton, triton_stack):
    _, client = triton
    cfg, addresses = triton_stack
    object_store = ObjectStore(addresses["s3"], *stack.read_s3_credentials(cfg.state_dir), cfg.bucket)
    params = common_pb2.GenerationParams(negative_prompt="blurry", height=32, width=32, num_frames=5, fps=8.0,
                                         num_inference_steps=2, guidance_scale=2.0, seed=1)  # resolved, as stages need
    in_process = EncodeHandler(models, object_store)
    served = EncodeHandler(dataclasses.replace(models, text_encoder=client), object_store)
    outputs = []
    for job, handler in (("triton-job-local", in_process), ("triton-job-served", served)):
        task = events_pb2.EncodeTask(job_id=job, prompt=PROMPTS[0], params=params)
        outputs.append(handler.run(task, direct_context(job, "test")))
    for field in ("context", "negative_context", "y"):
        local, remote = (object_store.get_tensors(getattr(out, field)) for out in outputs)
        assert local.keys() == remote.keys() == {field}
        assert torch.equal(local[field], remote[field]), field


def test_wait_ready_returns_for_the_served_model_and_names_a_missing_endpoint(triton):
    _, client = triton
    client.wait_ready(timeout_s=10.0)
    missing = TritonTextEncoder(f"127.0.0.1:{free_port()}", TEXT_ENCODER_MODEL, "float32", timeout_s=5.0)
    with pytest.raises(ConnectionError, match="umt5_encoder' not ready after 1.0 s"):
        missing.wait_ready(timeout_s=1.0)
    with pytest.raises(ConnectionError, match="triton 127.0.0.1:"):  # the stage worker retries a ConnectionError
        missing.encode(["a prompt"])
    missing.close()


# ---- metrics --------------------------------------------------------------------------------------------------
def scrape(address: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """name -> [(labels, value)] of every sample at http://<address>/metrics."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def triton_requests(addresses) -> float:
    """Requests the text encoder model answered, from Triton's own metrics (no sample before the first one)."""
    samples = scrape(addresses["metrics-triton"]).get("nv_inference_request_success_total", [])
    return sum(v for labels, v in samples if labels["model"] == TEXT_ENCODER_MODEL)


def value(samples, name: str, **labels: str) -> float:
    matching = [v for lbls, v in samples.get(name, []) if all(lbls.get(k) == want for k, want in labels.items())]
    assert len(matching) == 1, (name, labels, samples.get(name))
    return matching[0]


def test_metrics_after_a_job_through_triton(triton_stack):
    cfg, addresses = triton_stack
    served = triton_requests(addresses)  # the Triton tests of this module call it directly too
    token = (cfg.state_dir / stack.TOKEN_FILE).read_text().strip()
    with grpc.insecure_channel(addresses["gateway"]) as channel:
        jobs = gateway_pb2_grpc.JobServiceStub(with_token(channel, token))
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
    assert triton_requests(addresses) - served == 2

    deadline = time.monotonic() + 30  # lag is read at most once a second, after a poll
    while True:
        lags = {topic: [v for labels, v in scrape(addresses[f"metrics-{service}"]).get("mova_queue_lag", [])
                        if labels["topic"] == topic]
                for service, topic in (("encoder", TOPIC_ENCODE), ("denoiser", TOPIC_DENOISE))}
        if lags == {TOPIC_ENCODE: [0], TOPIC_DENOISE: [0]} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert lags == {TOPIC_ENCODE: [0], TOPIC_DENOISE: [0]}
