"""Full sampler steps: H3's denoise driving H1's modules (the production forward) against the reference
sampler driving the reference forward, from the same noise tensors.

Two setups: modules built in the test from the tiny family (3 video / 2 audio layers, so one video block runs
after the bridge layers), and the tiny checkpoint on disk (movakit.loading.demo.default_demo_checkpoint), loaded through
MovaCheckpoint on one side and read raw with safetensors on the other, so a loader rename or transpose shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import exactness_setup as es
import sampler_reference as sref
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from movakit.loading import MovaModels
from movakit.models.audio_dit import AudioDiT, AudioDiTConfig
from movakit.models.bridge import BridgeConfig, DualTowerBridge
from movakit.models.video_dit import VideoDiT, VideoDiTConfig
from movakit.schedulers.flow_match_pair import FlowMatchPairScheduler
from movakit.stages.denoise import DenoiseRequest, denoise

RELEASE_SCHEDULER = {"num_train_timesteps": 1000, "shift": 5.0, "extra_one_step": True, "sigma_max": 1.0,
                     "sigma_min": 0.0029940119760479044}
REL = 1e-5


def _load(module: nn.Module, sd: dict) -> nn.Module:
    module.load_state_dict({k: v.to(torch.float32) for k, v in sd.items()}, strict=True)
    return module.eval()


def _h1_models(fam: es.Family) -> MovaModels:
    return MovaModels(
        video_dit=_load(VideoDiT(VideoDiTConfig.from_dict(fam.video_cfg)), fam.video_sd),
        video_dit_2=_load(VideoDiT(VideoDiTConfig.from_dict(fam.video_cfg)), fam.video_2_sd),
        audio_dit=_load(AudioDiT(AudioDiTConfig.from_dict(fam.audio_cfg)), fam.audio_sd),
        bridge=_load(DualTowerBridge(BridgeConfig.from_dict(fam.bridge_cfg)), fam.bridge_sd),
        scheduler=FlowMatchPairScheduler.from_config(dict(RELEASE_SCHEDULER)),
        boundary_ratio=0.9,
    )


def _compare(models, fam: es.Family, *, grid, audio_len, steps, cfg, fps, start_step=0, shift=5.0,
             sigma_min=RELEASE_SCHEDULER["sigma_min"], boundary_ratio=0.9, seed=0):
    text_dim = fam.video_cfg["text_dim"]
    audio_ch = fam.audio_cfg["in_dim"]
    ctx = es.randn(1, 9, text_dim, seed=seed + 1, dtype=torch.float32)
    neg = es.randn(1, 9, text_dim, seed=seed + 2, dtype=torch.float32)
    y = es.randn(1, 20, *grid, seed=seed + 3, dtype=torch.float32)
    vn = es.randn(1, 16, *grid, seed=seed + 4, dtype=torch.float32)
    an = es.randn(1, audio_ch, audio_len, seed=seed + 5, dtype=torch.float32)
    req = DenoiseRequest(
        context=ctx, negative_context=neg, y=y, height=grid[1] * 8, width=grid[2] * 8,
        num_frames=(grid[0] - 1) * 4 + 1, fps=fps, num_inference_steps=steps, guidance_scale=cfg, seed=123,
        video_noise=vn, audio_noise=an, start_step=start_step, audio_latent_length=audio_len,
    )
    with torch.no_grad():
        out = denoise(models, req)
    v_ref, a_ref, _ = sref.reference_sample(
        es.reference_velocity_fn(fam, fps), video_noise=vn, audio_noise=an, y=y, context=ctx, negative_context=neg,
        num_steps=steps, guidance_scale=cfg, shift=shift, sigma_min=sigma_min, boundary_ratio=boundary_ratio,
        start_step=start_step,
    )
    es.assert_rel_close(out.video_latents, v_ref, REL, f"video latents ({steps} steps from {start_step})")
    es.assert_rel_close(out.audio_latents, a_ref, REL, f"audio latents ({steps} steps from {start_step})")


@pytest.fixture(scope="module")
def fam():
    return es.make_family(head_dim=24, video_heads=2, audio_heads=3, video_layers=3, audio_layers=2, seed=50)


def test_two_sampler_steps_with_cfg_match_reference(fam):
    # t = 1000 with video_dit, then ~834 with video_dit_2 down to sigma 0
    _compare(_h1_models(fam), fam, grid=(2, 4, 6), audio_len=11, steps=2, cfg=5.0, fps=24.0)


def test_last_two_of_ten_steps_at_25_fps_match_reference(fam):
    _compare(_h1_models(fam), fam, grid=(3, 2, 4), audio_len=17, steps=10, cfg=5.0, fps=25.0, start_step=8)


# ------------------------------------------------------------------ the tiny checkpoint on disk


def _raw_state_dict(folder: Path) -> dict:
    sd = {}
    for f in sorted(folder.glob("*.safetensors")):
        sd.update(load_file(str(f)))
    return {k: v.to(torch.float64) for k, v in sd.items()}


@pytest.fixture(scope="module")
def tiny_checkpoint():
    from movakit.loading.demo import default_demo_checkpoint

    return default_demo_checkpoint()  # the project's cached tiny checkpoint (built once)


def test_tiny_checkpoint_loaded_by_movakit_samples_like_reference_on_raw_files(tiny_checkpoint):
    from movakit.loading import MovaCheckpoint

    root = Path(tiny_checkpoint)
    cfg = {name: json.loads((root / name / "config.json").read_text())
           for name in ("video_dit", "audio_dit", "dual_tower_bridge")}
    fam = es.Family(
        video_cfg=cfg["video_dit"], audio_cfg=cfg["audio_dit"], bridge_cfg=cfg["dual_tower_bridge"],
        video_sd=_raw_state_dict(root / "video_dit"), video_2_sd=_raw_state_dict(root / "video_dit_2"),
        audio_sd=_raw_state_dict(root / "audio_dit"), bridge_sd=_raw_state_dict(root / "dual_tower_bridge"),
    )
    sched = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    index = json.loads((root / "model_index.json").read_text())
    models = MovaCheckpoint(root).load(("video_dit", "video_dit_2", "audio_dit", "bridge", "scheduler"),
                                       dtype=torch.float32)
    _compare(models, fam, grid=(2, 4, 4), audio_len=9, steps=2, cfg=5.0, fps=24.0, shift=float(sched["shift"]),
             sigma_min=float(sched["sigma_min"]), boundary_ratio=float(index["boundary_ratio"]))
