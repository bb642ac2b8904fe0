"""H3's denoise loop against the reference sampler, with the model forward held fixed.

Both sides get the SAME velocity function (the float64 reference joint forward), so any difference is the
loop's: timesteps, sticky expert switch, CFG mixing, Euler update, final sigma 0, resume. The comparison
with H1's modules as the forward is in test_exactness_sampler_models.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import exactness_setup as es
import sampler_reference as sref
import pytest
import torch
from torch import nn

from movakit.loading import MovaModels
from movakit.schedulers.flow_match_pair import FlowMatchPairScheduler
from movakit.stages.denoise import DenoiseRequest, denoise, initial_noise

RELEASE_SCHEDULER = {"num_train_timesteps": 1000, "shift": 5.0, "extra_one_step": True, "sigma_max": 1.0,
                     "sigma_min": 0.0029940119760479044}
FPS = 24.0
GRID = (2, 4, 6)  # latent frames, H/8, W/8 -> video tokens (2, 2, 3) with patch (1, 2, 2)
AUDIO_LEN = 9


class _Holder(nn.Module):
    """Stands in for a tower: one float32 parameter (denoise reads device/dtype from it) and a config."""

    def __init__(self, name: str, in_dim: int = 0):
        super().__init__()
        self.name = name
        self.anchor = nn.Parameter(torch.zeros(1))
        self.config = _Cfg(in_dim)


@dataclass(frozen=True)
class _Cfg:
    in_dim: int


@pytest.fixture(scope="module")
def fam():
    return es.make_family(seed=10)


def _inputs(fam, seed=0):
    text_dim = fam.video_cfg["text_dim"]
    ctx = es.randn(1, 6, text_dim, seed=seed + 1, dtype=torch.float32)
    neg = es.randn(1, 6, text_dim, seed=seed + 2, dtype=torch.float32)
    y = es.randn(1, 20, *GRID, seed=seed + 3, dtype=torch.float32)
    return ctx, neg, y


def _run_h3(fam, *, steps, cfg, seed=7, start_step=0, video_noise=None, audio_noise=None, cfg_batch=True):
    ctx, neg, y = _inputs(fam)
    models = MovaModels(
        video_dit=_Holder("video_dit"), video_dit_2=_Holder("video_dit_2"),
        audio_dit=_Holder("audio_dit", in_dim=fam.audio_cfg["in_dim"]), bridge=_Holder("bridge"), scheduler=FlowMatchPairScheduler.from_config(dict(RELEASE_SCHEDULER)), boundary_ratio=0.9,
    )
    calls = []
    vel = es.reference_velocity_fn(fam, FPS)

    def forward(expert, audio_dit, bridge, *, video_x, audio_x, context, t_video, t_audio, video_fps):
        assert video_fps == FPS
        idx = 0 if expert is models.video_dit else 1
        assert expert is (models.video_dit, models.video_dit_2)[idx]
        calls.append((idx, float(t_video[0]), video_x.shape[0]))
        vs, as_ = [], []
        for b in range(video_x.shape[0]):  # reference is evaluated per sample
            v, a = vel(idx, video_x[b:b + 1], audio_x[b:b + 1], context[b:b + 1], t_video[b:b + 1], t_audio[b:b + 1])
            vs.append(v)
            as_.append(a)
        return torch.cat(vs), torch.cat(as_)

    experts = []
    req = DenoiseRequest(
        context=ctx, negative_context=neg, y=y, height=GRID[1] * 8, width=GRID[2] * 8, num_frames=(GRID[0] - 1) * 4 + 1,
        fps=FPS, num_inference_steps=steps, guidance_scale=cfg, seed=seed, video_noise=video_noise,
        audio_noise=audio_noise, start_step=start_step, audio_latent_length=AUDIO_LEN,
    )
    out = denoise(models, req, forward=forward, cfg_batch=cfg_batch, on_step=lambda info: experts.append(info.expert))
    return out, calls, experts


def _run_ref(fam, *, steps, cfg, video_noise, audio_noise, start_step=0):
    ctx, neg, y = _inputs(fam)
    return sref.reference_sample(
        es.reference_velocity_fn(fam, FPS), video_noise=video_noise, audio_noise=audio_noise, y=y, context=ctx,
        negative_context=neg, num_steps=steps, guidance_scale=cfg, shift=5.0, boundary_ratio=0.9,
        start_step=start_step,
    )


def test_initial_noise_is_cpu_generator_video_then_audio():
    g = torch.Generator().manual_seed(123)
    v_expect = torch.randn(1, 16, *GRID, generator=g)
    a_expect = torch.randn(1, 128, AUDIO_LEN, generator=g)
    v, a = initial_noise(123, (1, 16, *GRID), (1, 128, AUDIO_LEN))
    assert torch.equal(v, v_expect) and torch.equal(a, a_expect)


@pytest.mark.parametrize("cfg_batch", [True, False])
def test_two_steps_with_cfg_cross_the_expert_switch_and_end_at_sigma_zero(fam, cfg_batch):
    # 2 steps: t = 1000 (video_dit), then ~834 (< 900: video_dit_2), the second step goes to sigma 0.
    out, calls, experts = _run_h3(fam, steps=2, cfg=5.0, cfg_batch=cfg_batch)
    vn, an = initial_noise(7, (1, 16, *GRID), (1, 128, AUDIO_LEN))
    v_ref, a_ref, used = _run_ref(fam, steps=2, cfg=5.0, video_noise=vn, audio_noise=an)
    assert used == [0, 1]
    assert experts == ["video_dit", "video_dit_2"]
    assert [c[0] for c in calls][:1] == [0] and calls[-1][0] == 1
    es.assert_rel_close(out.video_latents, v_ref, 1e-6, "video latents after 2 steps")
    es.assert_rel_close(out.audio_latents, a_ref, 1e-6, "audio latents after 2 steps")


def test_no_cfg_single_forward_per_step(fam):
    out, calls, _ = _run_h3(fam, steps=2, cfg=1.0)
    assert len(calls) == 2 and all(c[2] == 1 for c in calls)
    vn, an = initial_noise(7, (1, 16, *GRID), (1, 128, AUDIO_LEN))
    v_ref, a_ref, _ = _run_ref(fam, steps=2, cfg=1.0, video_noise=vn, audio_noise=an)
    es.assert_rel_close(out.video_latents, v_ref, 1e-6, "video latents (cfg 1)")
    es.assert_rel_close(out.audio_latents, a_ref, 1e-6, "audio latents (cfg 1)")


def test_resume_across_the_switch_matches_reference(fam):
    # 10 steps: switch at index 4 (docs/model.md#expert-switch). Resume at step 3 from given latents, run to the end.
    vn = es.randn(1, 16, *GRID, seed=40, dtype=torch.float32)
    an = es.randn(1, 128, AUDIO_LEN, seed=41, dtype=torch.float32)
    out, calls, experts = _run_h3(fam, steps=10, cfg=3.0, start_step=3, video_noise=vn, audio_noise=an)
    v_ref, a_ref, used = _run_ref(fam, steps=10, cfg=3.0, video_noise=vn, audio_noise=an, start_step=3)
    assert used == [0, 1, 1, 1, 1, 1, 1]
    assert experts == ["video_dit"] + ["video_dit_2"] * 6
    es.assert_rel_close(out.video_latents, v_ref, 1e-6, "video latents, resumed at 3 of 10")
    es.assert_rel_close(out.audio_latents, a_ref, 1e-6, "audio latents, resumed at 3 of 10")


def test_cpu_global_seed_and_seeded_generator_give_the_same_noise():
    """The two official versions (global torch.manual_seed vs a seeded CPU Generator) agree on CPU."""
    with torch.random.fork_rng():
        torch.manual_seed(42)
        v_global = torch.randn(1, 16, *GRID)
        a_global = torch.randn(1, 128, AUDIO_LEN)
    v, a = initial_noise(42, (1, 16, *GRID), (1, 128, AUDIO_LEN))
    assert torch.equal(v, v_global) and torch.equal(a, a_global)
