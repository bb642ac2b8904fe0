"""Sampler semantics of stages/denoise.py, with a small stand-in for the dual-tower forward.

The stand-in is deterministic and depends on the expert, the prompt context, the timestep, the latents and the
image conditioning, so switch/CFG/resume/seed mistakes change its result.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from movakit.loading import MovaModels
from movakit.schedulers.flow_match_pair import FlowMatchPairScheduler
from movakit.stages.denoise import (
    DenoiseRequest,
    StepInfo,
    audio_latent_length,
    audio_num_samples,
    denoise,
    initial_noise,
)

SCHED = {"shift": 5.0, "extra_one_step": True, "num_train_timesteps": 1000}
Z, T, HL, WL, CA, LA = 16, 3, 4, 6, 8, 5  # video latent (16, 3, 4, 6), audio latent (8, 5)


class _Expert(nn.Module):
    def __init__(self, scale: float, name: str):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))
        self.name = name


@dataclass
class _AudioConfig:
    in_dim: int


class _AudioDiT(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.3))
        self.config = _AudioConfig(in_dim=CA)


def _models() -> MovaModels:
    return MovaModels(
        video_dit=_Expert(0.9, "video_dit"),
        video_dit_2=_Expert(-0.4, "video_dit_2"),
        audio_dit=_AudioDiT(),
        bridge=nn.Linear(1, 1),
        scheduler=FlowMatchPairScheduler.from_config(SCHED),
        boundary_ratio=0.9,
    )


class _Recorder:
    """Stand-in dual_tower_forward that records (expert name, batch, t_video dtype) per call."""

    def __init__(self):
        self.calls = []

    def __call__(self, video_dit, audio_dit, bridge, *, video_x, audio_x, context, t_video, t_audio, video_fps):
        self.calls.append((video_dit.name, video_x.shape[0], t_video.dtype, tuple(t_video.shape), video_x.shape[1]))
        b = video_x.shape[0]
        ctx = context.float().mean(dim=(1, 2)).view(b, 1, 1, 1, 1)
        lat, y = video_x[:, :Z].float(), video_x[:, Z:].float()
        tv = (t_video.float() / 1000).view(b, 1, 1, 1, 1)
        v = video_dit.scale * lat * tv + ctx * (1 + y[:, 4:].mean()) + 0.01 * video_fps
        a = audio_dit.w * audio_x.float() * t_audio.float().view(b, 1, 1) / 1000 + ctx.view(b, 1, 1) * 2
        return v, a


def _request(**kw) -> DenoiseRequest:
    g = torch.Generator().manual_seed(7)
    base = dict(
        context=torch.randn(1, 6, 10, generator=g),
        negative_context=torch.randn(1, 6, 10, generator=g) - 1.0,
        y=torch.randn(1, 4 + Z, T, HL, WL, generator=g),
        height=HL * 8,
        width=WL * 8,
        num_frames=(T - 1) * 4 + 1,
        fps=24.0,
        num_inference_steps=10,
        guidance_scale=5.0,
        seed=42,
        audio_latent_length=LA,
    )
    base.update(kw)
    return DenoiseRequest(**base)


def test_audio_length_formula_matches_spec():
    assert audio_num_samples(48000, 193, 24.0) == 386000
    assert audio_latent_length(48000, 960, 193, 24.0) == 403
    assert audio_latent_length(48000, 960, 17, 24.0) == 36  # 34000 samples: (34000 - 1) // 960 + 1
    assert audio_latent_length(16000, 320, 25, 25.0) == 50


def test_noise_order_is_video_then_audio_like_global_seed():
    v, a = initial_noise(123, (1, Z, T, HL, WL), (1, CA, LA))
    torch.manual_seed(123)
    assert torch.equal(v, torch.randn(1, Z, T, HL, WL))
    assert torch.equal(a, torch.randn(1, CA, LA))
    assert v.dtype == a.dtype == torch.float32


def test_seed_reproducible_and_equal_to_passing_the_noise():
    m, f = _models(), _Recorder()
    r1 = denoise(m, _request(), forward=f)
    r2 = denoise(m, _request(), forward=f)
    v, a = initial_noise(42, (1, Z, T, HL, WL), (1, CA, LA))
    r3 = denoise(m, _request(video_noise=v, audio_noise=a), forward=f)
    r4 = denoise(m, _request(seed=43), forward=f)
    assert torch.equal(r1.video_latents, r2.video_latents) and torch.equal(r1.audio_latents, r2.audio_latents)
    assert torch.equal(r1.video_latents, r3.video_latents) and torch.equal(r1.audio_latents, r3.audio_latents)
    assert not torch.equal(r1.video_latents, r4.video_latents)
    assert r1.video_latents.dtype == r1.audio_latents.dtype == torch.float32
    assert r1.video_latents.shape == (1, Z, T, HL, WL) and r1.audio_latents.shape == (1, CA, LA)


@pytest.mark.parametrize("steps,high", [(50, 18), (25, 9), (20, 8), (10, 4)])
def test_sticky_expert_switch(steps, high):
    f, infos = _Recorder(), []
    denoise(_models(), _request(num_inference_steps=steps), forward=f, on_step=infos.append)
    experts = [c[0] for c in f.calls]
    assert experts == ["video_dit"] * high + ["video_dit_2"] * (steps - high)
    assert [i.expert for i in infos] == experts
    assert [i.step for i in infos] == list(range(1, steps + 1))
    assert all(i.total == steps for i in infos) and infos[-1].eta_s == 0.0


def test_timestep_is_float32_batch_and_input_has_mask_and_latent_channels():
    f = _Recorder()
    denoise(_models(), _request(num_inference_steps=2), forward=f)
    assert {c[1:] for c in f.calls} == {(2, torch.float32, (2,), Z + 4 + Z)}


def test_cfg_batched_equals_two_forwards():
    m = _models()
    fb, fs = _Recorder(), _Recorder()
    rb = denoise(m, _request(), forward=fb, cfg_batch=True)
    rs = denoise(m, _request(), forward=fs, cfg_batch=False)
    assert len(fb.calls) == 10 and {c[1] for c in fb.calls} == {2}
    assert len(fs.calls) == 20 and {c[1] for c in fs.calls} == {1}
    torch.testing.assert_close(rb.video_latents, rs.video_latents, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rb.audio_latents, rs.audio_latents, rtol=1e-6, atol=1e-6)


def test_cfg_formula_one_step():
    """One step = the final Euler step from sigma(t0)=1 to 0: x1 = x0 - v, v = v_neg + s (v_pos - v_neg)."""
    m, f, s = _models(), _Recorder(), 3.5
    req = _request(num_inference_steps=1, guidance_scale=s)
    out = denoise(m, req, forward=f)
    v0, a0 = initial_noise(42, (1, Z, T, HL, WL), (1, CA, LA))
    t = torch.tensor([1000.0])
    kw = dict(video_x=torch.cat([v0, req.y], 1), audio_x=a0, t_video=t, t_audio=t, video_fps=24.0)
    vp, ap = f(m.video_dit, m.audio_dit, m.bridge, context=req.context, **kw)
    vn, an = f(m.video_dit, m.audio_dit, m.bridge, context=req.negative_context, **kw)
    torch.testing.assert_close(out.video_latents, v0 - (vn + s * (vp - vn)))
    torch.testing.assert_close(out.audio_latents, a0 - (an + s * (ap - an)))


def test_per_modality_guidance_scales_each_velocity_with_its_own_scale():
    """One step: video guided with 3.5, audio with 1.5; the negative branch runs once for both."""
    m, f = _models(), _Recorder()
    req = _request(num_inference_steps=1, guidance_scale=3.5, audio_guidance_scale=1.5)
    out = denoise(m, req, forward=f)
    assert len(f.calls) == 1 and f.calls[0][1] == 2  # still one batch of two branches
    v0, a0 = initial_noise(42, (1, Z, T, HL, WL), (1, CA, LA))
    t = torch.tensor([1000.0])
    kw = dict(video_x=torch.cat([v0, req.y], 1), audio_x=a0, t_video=t, t_audio=t, video_fps=24.0)
    vp, ap = f(m.video_dit, m.audio_dit, m.bridge, context=req.context, **kw)
    vn, an = f(m.video_dit, m.audio_dit, m.bridge, context=req.negative_context, **kw)
    torch.testing.assert_close(out.video_latents, v0 - (vn + 3.5 * (vp - vn)))
    torch.testing.assert_close(out.audio_latents, a0 - (an + 1.5 * (ap - an)))
    # the audio's scale spelled out equal to the video's is the default, bit for bit
    same = denoise(m, _request(audio_guidance_scale=5.0), forward=_Recorder())
    default = denoise(m, _request(), forward=_Recorder())
    assert torch.equal(same.audio_latents, default.audio_latents)
    assert torch.equal(same.video_latents, default.video_latents)
    # guidance off for the video only still runs the negative branch, which the audio needs
    f1 = _Recorder()
    denoise(m, _request(guidance_scale=1.0, audio_guidance_scale=4.0, num_inference_steps=2), forward=f1)
    assert [c[1] for c in f1.calls] == [2, 2]


def test_guidance_one_is_a_single_positive_forward():
    m, f = _models(), _Recorder()
    out = denoise(m, _request(guidance_scale=1.0), forward=f)
    assert len(f.calls) == 10 and {c[1] for c in f.calls} == {1}
    # the negative prompt must not matter at guidance 1
    other = denoise(m, _request(guidance_scale=1.0, negative_context=torch.zeros(1, 6, 10)), forward=_Recorder())
    assert torch.equal(out.video_latents, other.video_latents)


def test_constant_velocity_integrates_to_minus_one_sigma():
    """Sum of all Euler deltas is sigma_end - sigma_start = 0 - 1 whatever the step count."""

    def const(video_dit, audio_dit, bridge, *, video_x, audio_x, context, t_video, t_audio, video_fps):
        b = video_x.shape[0]
        return torch.full((b, Z, T, HL, WL), 2.0), torch.full((b, CA, LA), -1.0)

    v0, a0 = initial_noise(42, (1, Z, T, HL, WL), (1, CA, LA))
    out = denoise(_models(), _request(num_inference_steps=30), forward=const)
    torch.testing.assert_close(out.video_latents, v0 - 2.0, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.audio_latents, a0 + 1.0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("k", [3, 4, 5])  # 4 = the switch step of 10: resume on both sides of it
def test_resume_equals_uninterrupted(k):
    m = _models()
    saved: dict[int, StepInfo] = {}
    full = denoise(m, _request(), forward=_Recorder(), on_step=lambda i: saved.setdefault(i.step, i))
    ck = saved[k]
    f = _Recorder()
    resumed = denoise(
        m,
        _request(start_step=k, video_noise=ck.video_latents, audio_noise=ck.audio_latents),
        forward=f,
    )
    assert len(f.calls) == 10 - k
    assert [c[0] for c in f.calls] == ["video_dit"] * max(0, 4 - k) + ["video_dit_2"] * (10 - max(4, k))
    assert torch.equal(resumed.video_latents, full.video_latents)
    assert torch.equal(resumed.audio_latents, full.audio_latents)


def test_cancel_by_raising_from_the_hook():
    f = _Recorder()

    class Cancelled(Exception):
        pass

    def hook(info: StepInfo):
        if info.step == 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        denoise(_models(), _request(), forward=f, on_step=hook)
    assert len(f.calls) == 3


def test_offload_keeps_results_and_leaves_active_expert_on_device():
    m = _models()
    ref = denoise(m, _request(), forward=_Recorder())
    out = denoise(m, _request(), forward=_Recorder(), offload=True)
    assert torch.equal(ref.video_latents, out.video_latents)
    assert m.video_dit_2.scale.device.type == "cpu"


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(start_step=10), "start_step"),
        (dict(start_step=2), "video_noise and audio_noise"),
        (dict(guidance_scale=0.0), "guidance_scale"),
        (dict(audio_guidance_scale=0.0), "audio_guidance_scale"),
        (dict(audio_sync_guidance_scale=1.0), "audio_sync_guidance_scale .* needs sync_guidance_scale"),
        (dict(fps=0.0), "fps"),
        (dict(y=torch.zeros(1, 4, T, HL, WL)), "y must be"),
        (dict(negative_context=torch.zeros(1, 5, 10)), "negative_context"),
        (dict(height=HL * 8 + 8), "height x width"),
        (dict(video_noise=torch.zeros(1, Z, T, HL, WL + 1)), "video_noise must have shape"),
        (dict(audio_latent_length=0), "audio_latent_length"),
    ],
)
def test_invalid_requests_name_the_field(kw, match):
    with pytest.raises(ValueError, match=match):
        denoise(_models(), _request(**kw), forward=_Recorder())


def test_passing_only_the_video_noise_keeps_the_seeded_audio_noise():
    """The audio noise is the generator's second draw even when the caller supplies the video noise."""

    def const(video_dit, audio_dit, bridge, *, video_x, audio_x, context, t_video, t_audio, video_fps):
        b = video_x.shape[0]
        return torch.zeros(b, Z, T, HL, WL), torch.full((b, CA, LA), -1.0)

    _, a0 = initial_noise(42, (1, Z, T, HL, WL), (1, CA, LA))
    v = torch.ones(1, Z, T, HL, WL)
    out = denoise(_models(), _request(num_inference_steps=2, video_noise=v), forward=const)
    assert torch.equal(out.video_latents, v)
    torch.testing.assert_close(out.audio_latents, a0 + 1.0, rtol=0, atol=1e-6)
