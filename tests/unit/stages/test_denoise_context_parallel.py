"""A denoiser spread over 2 gloo processes: rank 0 leads, rank 1 follows; the latents equal the single-process
sampler's within float32 noise, a task that rank 0 cancels mid-way stops both ranks at the same step, a request the
sampler refuses fails on rank 0 and leaves rank 1 ready, idle heartbeats between tasks keep the ranks in step, and a
task's LoRA adapter, sent by rank 0, gives the single-process result with that adapter."""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from movakit.loading import MovaCheckpoint
from movakit.loading.demo import default_demo_checkpoint
from movakit.lora.adapter import LoraAdapter, applied
from movakit.runtime.localstack import free_port
from movakit.stages.denoise import DenoiseRequest, denoise

COMPONENTS = ("video_dit", "video_dit_2", "audio_dit", "bridge", "scheduler")


class Cancelled(Exception):
    pass


def _models():
    return MovaCheckpoint(str(default_demo_checkpoint())).load(COMPONENTS)


def _request(steps: int) -> DenoiseRequest:
    g = torch.Generator().manual_seed(3)
    context = torch.randn(1, 512, 32, generator=g)
    # 5 x 6 x 10 latent: 75 video tokens, odd; 37 audio latent frames, odd
    return DenoiseRequest(context=context, negative_context=torch.zeros_like(context),
                          y=torch.randn(1, 20, 5, 6, 10, generator=g), height=48, width=80, num_frames=17, fps=24.0,
                          num_inference_steps=steps, guidance_scale=5.0, seed=11, audio_latent_length=37)


def _adapter(models) -> LoraAdapter:
    """A LoRA adapter on one attention projection of the high-noise expert, from a fixed seed."""
    q = models.video_dit.blocks[0].self_attn.q
    g = torch.Generator().manual_seed(5)
    layers = {"video_dit.blocks.0.self_attn.q": (torch.randn(2, q.in_features, generator=g),
                                                 torch.randn(q.out_features, 2, generator=g))}
    return LoraAdapter(rank=2, alpha=2.0, targets="attention", layers=layers)


def _rank_main(rank: int, world: int, port: int, out_dir: str) -> None:
    from movakit.runtime.parallel_denoise import Lead, follow

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    models = _models()
    try:
        if rank != 0:
            follow(models)
            return
        lead = Lead(heartbeat_s=0.05)
        result = lead.denoise(models, _request(3), cfg_batch=False)
        time.sleep(0.3)  # several heartbeats while idle
        steps_seen = []

        def cancel_at_two(info):
            steps_seen.append(info.step)
            if info.step == 2:
                raise Cancelled
        try:
            lead.denoise(models, _request(5), on_step=cancel_at_two)
        except Cancelled:
            pass
        with pytest.raises(ValueError, match="guidance_scale must be > 0") as refused:
            lead.denoise(models, dataclasses.replace(_request(2), guidance_scale=0.0))
        after = lead.denoise(models, _request(2))  # the follower is in step with rank 0 again
        adapter = _adapter(models)
        with applied(models, adapter, 0.7):  # rank 0 applies it (AdapterCache.use); the follower gets it sent
            lora = lead.denoise(models, _request(2), adapter=adapter, lora_scale=0.7)
        lead.stop()
        torch.save({"video": result.video_latents, "audio": result.audio_latents, "steps": steps_seen,
                    "after": after.video_latents, "refused": str(refused.value), "lora": lora.video_latents},
                   os.path.join(out_dir, "rank0.pt"))
    finally:
        dist.destroy_process_group()


def test_rank0_leads_followers_and_cancel_stops_every_rank(tmp_path):
    mp.spawn(_rank_main, args=(2, free_port(), str(tmp_path)), nprocs=2)
    got = torch.load(tmp_path / "rank0.pt")
    models = _models()
    with torch.no_grad():
        ref = denoise(models, _request(3), cfg_batch=False)
        after = denoise(models, _request(2))
        with applied(models, _adapter(models), 0.7):
            lora = denoise(models, _request(2))
    torch.testing.assert_close(got["video"], ref.video_latents, rtol=0, atol=1e-5)
    torch.testing.assert_close(got["audio"], ref.audio_latents, rtol=0, atol=1e-5)
    torch.testing.assert_close(got["after"], after.video_latents, rtol=0, atol=1e-5)
    assert got["steps"] == [1, 2]
    assert "guidance_scale" in got["refused"]
    torch.testing.assert_close(got["lora"], lora.video_latents, rtol=0, atol=1e-5)
    assert (lora.video_latents - after.video_latents).abs().max() > 1e-3  # the adapter changes the result
