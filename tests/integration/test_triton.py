"""The text encoder served by a REAL tritonserver (PyPI nvidia-pytriton's binary, CPU, 127.0.0.1) from
infra/triton/models, on the tiny demo checkpoint: the same embeddings as the in-process encoder, bit for bit, also
when the dynamic batcher groups prompts, and an encode job run through it stores the same tensors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from movakit.api.v1 import common_pb2, events_pb2
from movakit.loading import MovaCheckpoint
from movakit.loading.demo import default_demo_checkpoint
from movakit.runtime.localstack import free_port
from movakit.runtime.triton_server import TEXT_ENCODER_MODEL, start_tritonserver
from movakit.runtime.worker import direct_context
from movakit.services.encoder.servicer import EncodeHandler
from movakit.services.encoder.triton_client import TritonTextEncoder

pytestmark = [pytest.mark.integration]

PROMPTS = ["A cat plays a tiny piano. The audio has soft piano notes.", "",
           "naïve café &amp; <b>ünïcode</b> ✓   with   spaces", "waves " * 700]  # the last one is cut at 512 tokens


@pytest.fixture(scope="module")
def models():
    return MovaCheckpoint(str(default_demo_checkpoint())).load(("text_encoder", "video_vae"), device="cpu",
                                                                dtype=torch.float32)


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    server = start_tritonserver(free_port(), free_port(), free_port(), tmp_path_factory.mktemp("triton"),
                                env={"MOVA_TRITON_CHECKPOINT": str(default_demo_checkpoint())})
    client = TritonTextEncoder(server.address, TEXT_ENCODER_MODEL, "float32", timeout_s=60.0)
    yield server, client
    client.close()
    server.stop()


def test_triton_embeddings_equal_in_process_bit_for_bit(models, triton):
    _, client = triton
    for prompt in PROMPTS:
        assert torch.equal(client.encode([prompt]), models.text_encoder.encode([prompt])), prompt
    together = client.encode(PROMPTS)  # four requests at once: the dynamic batcher may group them
    assert together.shape == (len(PROMPTS), 512, models.text_encoder.dim)
    assert torch.equal(together, models.text_encoder.encode(PROMPTS))


def test_bad_prompt_bytes_are_invalid_argument_and_the_model_keeps_serving(models, triton):
    server, client = triton
    tensor = triton_grpc.InferInput("PROMPT", [1, 2], "UINT8")
    tensor.set_data_from_numpy(np.array([[0xFF, 0xFE]], dtype=np.uint8))
    raw = triton_grpc.InferenceServerClient(server.address)
    with pytest.raises(InferenceServerException, match="PROMPT: 'utf-8' codec") as info:
        raw.infer(TEXT_ENCODER_MODEL, [tensor])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert raw.is_model_ready(TEXT_ENCODER_MODEL)
    assert torch.equal(client.encode(["still here"]), models.text_encoder.encode(["still here"]))


def test_encode_job_through_triton_stores_the_in_process_tensors(models, triton, object_store):
    _, client = triton
    params = common_pb2.GenerationParams(negative_prompt="blurry", height=32, width=32, num_frames=5)
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
