"""The denoiser's checkpoints (real SeaweedFS, tiny checkpoint in-process): an interrupted task resumes from the
newest VALID checkpoint and ends with exactly the latents of an uninterrupted run; the direct RPC path reuses
stored outputs."""

from __future__ import annotations

import uuid

import pytest
import torch

from movakit.api.v1 import common_pb2, events_pb2
from movakit.loading import MovaCheckpoint
from movakit.lora.cache import AdapterCache
from movakit.lora.registry import AdapterRegistry
from movakit.model_rules import ModelRules
from movakit.runtime.tasks import JobCancelled, TaskContext, run_or_reuse
from movakit.loading.demo import default_demo_checkpoint
from movakit.services.denoiser.servicer import COMPONENTS, DenoiseHandler

pytestmark = pytest.mark.integration

PARAMS = common_pb2.GenerationParams(prompt="p", negative_prompt="n", height=32, width=32, num_frames=5, fps=8.0,
                                     num_inference_steps=4, guidance_scale=2.0, seed=3)


@pytest.fixture(scope="module")
def models():
    return MovaCheckpoint(default_demo_checkpoint()).load(COMPONENTS)


def _handler(models, store, every: int) -> DenoiseHandler:
    return DenoiseHandler(models, store, rules=ModelRules.from_checkpoint(default_demo_checkpoint()),
                          checkpoint_every=every, cfg_batch=False,
                          adapters=AdapterCache(models, AdapterRegistry(store), capacity=2))


def _task(store, models, job_id: str) -> events_pb2.DenoiseTask:
    g = torch.Generator().manual_seed(0)
    text_dim = models.video_dit.config.text_dim
    base = f"jobs/{job_id}/encode"
    return events_pb2.DenoiseTask(
        job_id=job_id, params=PARAMS,
        context=store.put_tensors(f"{base}/context.safetensors",
                                  {"context": torch.randn(1, 512, text_dim, generator=g)}),
        negative_context=store.put_tensors(f"{base}/negative_context.safetensors",
                                           {"negative_context": torch.randn(1, 512, text_dim, generator=g)}),
        y=store.put_tensors(f"{base}/y.safetensors", {"y": torch.randn(1, 20, 2, 4, 4, generator=g)}))


class Recorder:
    """A TaskContext whose job is cancelled once `cancel_after` denoise steps were reported."""

    def __init__(self, job_id: str, cancel_after: int | None = None) -> None:
        self.steps: list[int] = []
        self.cancel_after = cancel_after
        self.ctx = TaskContext(job_id=job_id, emit=self._emit, is_cancelled=self._cancelled, source="test")

    def _emit(self, event: events_pb2.JobEvent) -> None:
        if event.WhichOneof("kind") == "denoise_step":
            self.steps.append(event.denoise_step.step)

    def _cancelled(self, _job: str) -> bool:
        return self.cancel_after is not None and len(self.steps) >= self.cancel_after


def test_resume_from_newest_valid_checkpoint_gives_the_uninterrupted_result(object_store, models):
    store = object_store
    handler = _handler(models, store, 1)
    straight_job, resumed_job = (f"job-{uuid.uuid4().hex[:8]}" for _ in range(2))

    straight = Recorder(straight_job)
    out_a = handler.run(_task(store, models, straight_job), straight.ctx)
    assert straight.steps == [1, 2, 3, 4]

    task_b = _task(store, models, resumed_job)
    interrupted = Recorder(resumed_job, cancel_after=3)
    with pytest.raises(JobCancelled):
        handler.run(task_b, interrupted.ctx)
    assert interrupted.steps == [1, 2, 3]
    # checkpoints after steps 1, 2 and 3; damage the newest: the resume must fall back to step 2
    store.put_bytes(f"jobs/{resumed_job}/denoise/checkpoint-0003.safetensors", b"torn", "application/octet-stream")
    assert handler.newest_valid_checkpoint(task_b, 4)[0] == 2

    resumed = Recorder(resumed_job)
    out_b = handler.run(task_b, resumed.ctx)
    assert resumed.steps == [3, 4]  # steps 1-2 came from the checkpoint
    for name in ("video_latents", "audio_latents"):
        a = store.get_tensors(getattr(out_a, name))[name]
        b = store.get_tensors(getattr(out_b, name))[name]
        assert torch.equal(a, b), name


def test_direct_call_reuses_stored_outputs(object_store, models):
    store = object_store
    handler = _handler(models, store, 0)
    job = f"job-{uuid.uuid4().hex[:8]}"
    task = _task(store, models, job)
    first = Recorder(job)
    out1, skipped1 = run_or_reuse(handler, store, task, first.ctx)
    second = Recorder(job)
    out2, skipped2 = run_or_reuse(handler, store, task, second.ctx)
    assert (skipped1, skipped2) == (False, True)
    assert out1 == out2 and second.steps == []
    assert store.get_raw(f"jobs/{job}/denoise/checkpoints.json") is None  # K=0: no checkpoints


def test_an_adapter_missing_from_the_registry_fails_the_task_naming_the_field(object_store, models):
    handler = _handler(models, object_store, 0)
    job = f"job-{uuid.uuid4().hex[:8]}"
    task = _task(object_store, models, job)
    task.tenant = "alice"
    task.params.lora.name = "my-style"
    task.params.lora.scale = 1.0
    with pytest.raises(ValueError, match="params.lora.name: no adapter 'my-style'"):
        handler.run(task, Recorder(job).ctx)
