"""Denoiser service: the flow-matching sampler with both video experts resident, resumable from checkpoints.

`DenoiseHandler.run` reads context / negative_context / y from S3 (sha256 verified), resumes from the newest valid
checkpoint of the job when one exists (jobs/<job>/denoise/checkpoint-<step>.safetensors, listed in the
self-checksummed index jobs/<job>/denoise/checkpoints.json), runs `movakit.stages.denoise.denoise` with a step hook
that publishes a progress event per step, writes a checkpoint every K steps and checks for cancellation, then stores
video_latents and audio_latents under jobs/<job>/denoise/. The sampler is deterministic after its seeded initial
noise, so a resumed run ends with the same latents as an uninterrupted one. A task naming a LoRA adapter
(params.lora, looked up in the adapters of the task's tenant) runs with it attached, unmerged, for its own denoise
only (movakit.lora.cache.AdapterCache). A long video's segment k is denoised with its own seed
(movakit.long_video.segment_request) and keeps its checkpoints and latents under jobs/<job>/seg-<k>/denoise/, so a
crash resumes that segment alone. With a `lead` (a replica over N devices, docs/parallel.md) the sampler runs split
over the replica's ranks; this process (rank 0) still reads, hooks, checkpoints and writes alone.
"""

from __future__ import annotations

import json
import logging
import time

import torch
from google.protobuf import json_format

from movakit.api.v1 import common_pb2, denoiser_pb2, events_pb2
from movakit.lora.cache import AdapterCache
from movakit.runtime.metrics import DENOISE_STEP_DURATION
from movakit.runtime.object_store import ObjectStore
from movakit.runtime.parallel_denoise import Lead
from movakit.runtime.topics import TOPIC_DECODE, TOPIC_DENOISE
from movakit.runtime.tasks import TaskContext, read_blob, stage_key, task_segment, with_segment, write_blob
from movakit.long_video import segment_request
from movakit.model_rules import ModelRules
from movakit.request import from_proto
from movakit.stages.denoise import StepInfo, denoise, denoise_request
from movakit.stages.encode import EncodeResult

COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "bridge", "scheduler")
_EXPERT_NAMES = {"video_dit": "high_noise", "video_dit_2": "low_noise"}
log = logging.getLogger("movakit.denoiser")


def checkpoint_index_key(task: events_pb2.DenoiseTask) -> str:
    return stage_key(task, "denoise", "checkpoints.json")


class DenoiseHandler:
    rpc_service = denoiser_pb2.DESCRIPTOR.services_by_name["Denoiser"]
    stage = common_pb2.STAGE_DENOISE
    stage_name = "denoise"
    inbox = TOPIC_DENOISE
    next_topic = TOPIC_DECODE
    task_type = events_pb2.DenoiseTask
    output_type = denoiser_pb2.DenoiseOutput

    def __init__(self, models, store: ObjectStore, *, rules: ModelRules, checkpoint_every: int,
                 cfg_batch: bool, adapters: AdapterCache, lead: Lead | None = None) -> None:
        """rules: the checkpoint's ModelRules (the audio length; the audio VAE itself is not loaded here);
        cfg_batch: movakit.execution.cfg_batch_for(the service's device), as `mova generate` decides it;
        adapters: applies each task's LoRA adapter to that task only (movakit.lora.cache);
        lead: rank 0's side of a replica over N devices (movakit.runtime.parallel_denoise), or None."""
        self.models = models
        self.adapters = adapters
        self.store = store
        self.rules = rules
        self.checkpoint_every = checkpoint_every
        self.cfg_batch = cfg_batch
        self.lead = lead

    # --- checkpoints ---------------------------------------------------------------------------------------------
    def _checkpoints(self, task: events_pb2.DenoiseTask) -> list[tuple[int, common_pb2.TensorRef]]:
        data = read_blob(self.store, checkpoint_index_key(task))
        if data is None:
            return []
        entries = json.loads(data)["checkpoints"]
        return [(int(e["step"]), json_format.ParseDict(e["ref"], common_pb2.TensorRef())) for e in entries]

    def _write_checkpoint(self, task: events_pb2.DenoiseTask, info: StepInfo,
                          known: list[tuple[int, common_pb2.TensorRef]]) -> None:
        ref = self.store.put_tensors(stage_key(task, "denoise", f"checkpoint-{info.step:04d}.safetensors"), {
            "video_latents": info.video_latents.detach().float().cpu().contiguous(),
            "audio_latents": info.audio_latents.detach().float().cpu().contiguous(),
            "step": torch.tensor([info.step], dtype=torch.int64),
        })
        known.append((info.step, ref))
        index = {"checkpoints": [{"step": s, "ref": json_format.MessageToDict(r)} for s, r in known]}
        write_blob(self.store, checkpoint_index_key(task), json.dumps(index).encode(), "application/json")

    def newest_valid_checkpoint(self, task: events_pb2.DenoiseTask,
                                total: int) -> tuple[int, dict[str, torch.Tensor]] | None:
        """(step, tensors) of the newest checkpoint of `task` whose file verifies, or None."""
        return self._newest_valid(task.job_id, self._checkpoints(task), total)

    def _newest_valid(self, job_id: str, known: list[tuple[int, common_pb2.TensorRef]],
                      total: int) -> tuple[int, dict[str, torch.Tensor]] | None:
        for step, ref in sorted(known, key=lambda e: e[0], reverse=True):
            if not 0 < step < total:
                continue
            try:
                tensors = self.store.get_tensors(ref)
            except Exception as exc:  # noqa: BLE001 - a missing or corrupt checkpoint is skipped
                log.warning("checkpoint unusable", extra={"fields": {"job_id": job_id, "step": step, "error": str(exc)}})
                continue
            if int(tensors["step"][0]) == step:
                return step, tensors
        return None

    # --- the stage -----------------------------------------------------------------------------------------------
    def run(self, task: events_pb2.DenoiseTask, ctx: TaskContext) -> denoiser_pb2.DenoiseOutput:
        if not task.job_id:
            raise ValueError("job_id: must not be empty")
        req = from_proto(task.params)
        segment = task_segment(task)
        if segment is not None:  # segment k of a long video: its own seed
            req = segment_request(req.require_resolved(), segment.index, segment.first_prompt)
        if req.lora_name and not task.tenant:  # adapters are per tenant: whose this name is must be known
            raise ValueError("tenant: a task naming params.lora.name must carry its job's tenant")
        encoded = EncodeResult(context=self.store.get_tensors(task.context)["context"],
                               negative_context=self.store.get_tensors(task.negative_context)["negative_context"],
                               y=self.store.get_tensors(task.y)["y"])
        req.require_resolved()
        total = req.num_inference_steps
        known = self._checkpoints(task)  # the index is read once per task
        resume = self._newest_valid(task.job_id, known, total)
        start_step, video_noise, audio_noise = 0, None, None
        if resume is None:
            known = []
        else:
            start_step, tensors = resume
            video_noise, audio_noise = tensors["video_latents"], tensors["audio_latents"]
            known = [(s, r) for s, r in known if s <= start_step]
            log.info("resuming from checkpoint", extra={"fields": {"job_id": task.job_id, "step": start_step}})

        step_began = time.perf_counter()  # when the current step began: the hook's own time is not a step's

        def on_step(info: StepInfo) -> None:
            nonlocal step_began
            DENOISE_STEP_DURATION.record(time.perf_counter() - step_began,
                                         {"expert": _EXPERT_NAMES.get(info.expert, info.expert)})
            ctx.emit(ctx.event(denoise_step=events_pb2.DenoiseStep(
                step=info.step, total=info.total, eta_s=info.eta_s, elapsed_s=info.elapsed_s,
                expert=_EXPERT_NAMES.get(info.expert, info.expert),
                segment=segment.index if segment is not None else 0,
                segment_count=segment.count if segment is not None else 0)))
            if self.checkpoint_every and info.step % self.checkpoint_every == 0 and info.step < info.total:
                self._write_checkpoint(task, info, known)
            ctx.check_cancel()
            step_began = time.perf_counter()

        request = denoise_request(req, encoded, self.rules, video_noise=video_noise, audio_noise=audio_noise,
                                  start_step=start_step)
        with self.adapters.use(task.tenant, req.lora_name, req.lora_scale) as adapter:
            if self.lead is None:
                result = denoise(self.models, request, on_step=on_step, cfg_batch=self.cfg_batch)
            else:
                result = self.lead.denoise(self.models, request, on_step=on_step, cfg_batch=self.cfg_batch,
                                           adapter=adapter, lora_scale=req.lora_scale, label=task.job_id)
        return denoiser_pb2.DenoiseOutput(
            video_latents=self.store.put_tensors(stage_key(task, "denoise", "video_latents.safetensors"),
                                                 {"video_latents": result.video_latents}),
            audio_latents=self.store.put_tensors(stage_key(task, "denoise", "audio_latents.safetensors"),
                                                 {"audio_latents": result.audio_latents}),
        )

    def outputs_valid(self, store: ObjectStore, output: denoiser_pb2.DenoiseOutput) -> bool:
        return store.exists(output.video_latents) and store.exists(output.audio_latents)

    def follow_up(self, task, output, source):  # noqa: ARG002
        return with_segment(events_pb2.DecodeTask(job_id=task.job_id, params=task.params,
                                                  video_latents=output.video_latents,
                                                  audio_latents=output.audio_latents, tenant=task.tenant), task), []
