"""One fine-tuning job from its S3 record to a registered adapter: the body of the trainer service's Celery task.

  1. read the job record; a finished job is left alone (a redelivered task is harmless), a cancelled one ends;
  2. download the dataset prefix and validate it (a bad clip fails the job, naming the clip);
  3. encode every clip once with the frozen encoders;
  4. a fresh adapter (seeded) or the newest checkpoint's adapter, optimizer and counters;
  5. train with the adapter applied unmerged, writing the job record on every update and a checkpoint every
     `checkpoint_every` updates; a cancel request stops after the current update;
  6. register the adapter under the job's name, then mark the job SUCCEEDED.
Every write is idempotent, so a task killed anywhere and run again continues from the newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from movakit.api.v1 import common_pb2, training_pb2
from movakit.lora.adapter import LoraAdapter, applied, trainable
from movakit.lora.store import decode, encode
from movakit.lora.targets import components_of, identity_of
from movakit.model_rules import ModelRules
from movakit.request import DEFAULT_FPS, preset_for
from movakit.runtime.object_store import ObjectStore
from movakit.training.data import ClipGeometry, DatasetError, load_clip, validate_dataset
from movakit.training.loop import Progress, TrainConfig, TrainState, train
from movakit.training import spec
from movakit.training.memory import MemoryPlan, Placement
from movakit.training.objective import TrainingTimesteps, encode_clip
from movakit.training.records import TERMINAL, JobRecords

log = logging.getLogger("movakit.trainer")


def trainable_adapter(models, request: training_pb2.FineTuneRequest, device: torch.device) -> LoraAdapter:
    """A new adapter on `device`, on the official accelerate targets of the requested components
    (movakit.lora.adapter.trainable: A as nn.Linear initialises its weight, B zero, so training starts at the base
    model's output), float32, seeded by the request (the official trainer's initialisation is unseeded), recording
    the base model it is for."""
    components = {name: module for name, module in components_of(models).items() if name in request.components}
    adapter = trainable(components, "accelerate", request.rank, request.alpha, device=device,
                        generator=torch.Generator(device="cpu").manual_seed(request.seed))
    return dataclasses.replace(adapter, base=identity_of(models))


def frozen_adapter(adapter: LoraAdapter) -> LoraAdapter:
    """The adapter's current values as plain tensors on the CPU (for saving and registering)."""
    layers = {key: (a.detach().float().cpu(), b.detach().float().cpu()) for key, (a, b) in adapter.layers.items()}
    return LoraAdapter(rank=adapter.rank, alpha=adapter.alpha, targets=adapter.targets, layers=layers,
                       base=adapter.base)


def download_dataset(store: ObjectStore, prefix: str, into: Path) -> Path:
    keys = store.list_keys(prefix.rstrip("/") + "/")
    if not keys:
        raise DatasetError(f"{prefix}: no objects under this prefix")
    for key in keys:
        path = into / key[len(prefix.rstrip("/")) + 1:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(store.get_raw(key) or b"")
    return into


def training_geometry(rules: ModelRules) -> ClipGeometry:
    """The clips a checkpoint trains on: its preset's size and clip length at the default frame rate (the official
    recipe's 193 frames of 352x640 at 24 fps, 8.04 s; 17 frames of 64x96 for the tiny demo checkpoint), the sound
    at the audio VAE's rate."""
    preset = preset_for(rules)
    return ClipGeometry(num_frames=preset.num_frames, height=preset.height, width=preset.width, fps=DEFAULT_FPS,
                        sample_rate=rules.audio_sample_rate)


def _update_progress(job: training_pb2.FineTuneJob, progress: Progress) -> None:
    job.step, job.total_steps = progress.step, progress.total
    job.loss, job.video_loss, job.audio_loss = progress.loss, progress.video_loss, progress.audio_loss
    job.learning_rate, job.eta_s = progress.lr, progress.eta_s


def run_job(job_id: str, store: ObjectStore, *, placement: Placement, geometry: ClipGeometry,
            register: Callable[[str, str, LoraAdapter], object],
            heartbeat: Callable[[], None] = lambda: None) -> training_pb2.FineTuneJob:
    """Run (or continue) job `job_id`; returns its final record. `placement` holds the loaded MovaModels (every
    component) and moves them to its device as the job's MemoryPlan says, all back to host RAM at the end;
    `geometry` the clips to train on (training_geometry), `register(tenant, name, adapter)` stores the finished
    adapter in the registry (the job's tenant owns it), and `heartbeat()` is called after every update (the
    trainer renews the job's lease there)."""
    records = JobRecords(store)
    job = records.read(job_id)
    if job is None:
        raise LookupError(f"fine-tuning job {job_id}: no record in S3")
    if job.state in TERMINAL:
        return job
    if records.cancel_requested(job_id):
        job.state = common_pb2.JOB_STATE_CANCELLED
        records.write(job)
        return job
    request = job.request
    job.state, job.error = common_pb2.JOB_STATE_RUNNING, ""
    records.write(job)

    plan = MemoryPlan.of(spec.resolved(request))  # a record written before the memory options has them unset
    cuda = placement.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(placement.device)
    try:
        trained = _train(job, records, store, placement, plan, geometry, heartbeat)
    finally:
        placement.place(())  # every component back in host RAM; the device is free between jobs
        if cuda:
            log.info("peak device memory", extra={"fields": {
                "job_id": job_id, "offload": plan.offload,
                "max_memory_allocated_gb": round(torch.cuda.max_memory_allocated(placement.device) / 1e9, 2),
                "max_memory_reserved_gb": round(torch.cuda.max_memory_reserved(placement.device) / 1e9, 2)}})
    if trained is None:
        return job
    adapter, final, config = trained
    if final.step < config.steps:
        job.state = common_pb2.JOB_STATE_CANCELLED
    else:
        register(job.tenant, request.name, frozen_adapter(adapter))
        job.state, job.adapter = common_pb2.JOB_STATE_SUCCEEDED, request.name
    records.write(job)
    return job


def _train(job: training_pb2.FineTuneJob, records: JobRecords, store: ObjectStore, placement: Placement,
           plan: MemoryPlan, geometry: ClipGeometry, heartbeat: Callable[[], None]
           ) -> tuple[LoraAdapter, TrainState, TrainConfig] | None:
    """Steps 2-5 of the module docstring; None when the dataset failed the job (the record says why)."""
    job_id, request, loaded = job.job_id, job.request, placement.models
    try:
        with tempfile.TemporaryDirectory(prefix="mova-dataset-") as folder:
            root = download_dataset(store, request.dataset, Path(folder))
            entries = validate_dataset(root, geometry)
            placement.place(plan.encoding())
            clips = [encode_clip(loaded, load_clip(e, geometry), geometry.fps) for e in entries]
    except DatasetError as exc:
        job.state, job.error = common_pb2.JOB_STATE_FAILED, f"dataset: {exc}"
        records.write(job)
        return None

    adapter = trainable_adapter(loaded, request, placement.device)
    state = None
    checkpoint = records.newest_checkpoint(job_id)
    if checkpoint is not None:
        step, manifest, weights, state_dict = checkpoint
        saved = decode(manifest, weights, where=f"training/{job_id} checkpoint {step}")
        with torch.no_grad():
            for key, (a, b) in adapter.layers.items():
                a.copy_(saved.layers[key][0])
                b.copy_(saved.layers[key][1])
        state = TrainState.from_dict(state_dict)
        job.resumed_from_step = state.step
        log.info("resuming", extra={"fields": {"job_id": job_id, "step": state.step}})

    config = TrainConfig(steps=request.steps, lr=request.learning_rate, min_lr=min(1e-6, request.learning_rate),
                         warmup_steps=request.warmup_steps, grad_accum=request.grad_accum, seed=request.seed,
                         checkpoint_every=request.checkpoint_every, memory=plan)

    def on_progress(progress: Progress) -> None:
        _update_progress(job, progress)
        records.write(job)
        heartbeat()

    def on_checkpoint(current: TrainState) -> None:
        records.write_checkpoint(job_id, current.step, *encode(frozen_adapter(adapter)), current.to_dict())

    params = [p for pair in adapter.layers.values() for p in pair]
    with applied(loaded, adapter):
        final = train(loaded, params, clips, config, TrainingTimesteps(loaded.scheduler, loaded.boundary_ratio),
                      state=state, on_progress=on_progress, on_checkpoint=on_checkpoint,
                      should_stop=lambda: records.cancel_requested(job_id), placement=placement)
    return adapter, final, config
