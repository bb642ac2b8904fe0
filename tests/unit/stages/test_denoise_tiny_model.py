"""The sampler over the real dual-tower forward at tiny sizes: batched CFG == two forwards, resume == uninterrupted."""

from __future__ import annotations


import pytest
import torch

from movakit.loading import MovaModels
from movakit.models.audio_dit import AudioDiT, AudioDiTConfig
from movakit.models.bridge import BridgeConfig, DualTowerBridge
from movakit.models.video_dit import VideoDiT, VideoDiTConfig
from movakit.schedulers.flow_match_pair import FlowMatchPairScheduler
from movakit.models.dual_tower import dual_tower_forward
from movakit.stages.denoise import DenoiseRequest, denoise, initial_noise
from movakit.loading.demo import tiny_config


def _strip(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def models() -> MovaModels:
    torch.manual_seed(0)
    v = VideoDiTConfig.from_dict(_strip(tiny_config("video_dit")))
    m = MovaModels(
        video_dit=VideoDiT(v).eval(),
        video_dit_2=VideoDiT(v).eval(),
        audio_dit=AudioDiT(AudioDiTConfig.from_dict(_strip(tiny_config("audio_dit")))).eval(),
        bridge=DualTowerBridge(BridgeConfig.from_dict(_strip(tiny_config("dual_tower_bridge")))).eval(),
        scheduler=FlowMatchPairScheduler.from_config(_strip(tiny_config("scheduler"))),
        boundary_ratio=0.9,
    )
    # random init leaves some output projections at zero in DiT-style models; perturb every weight so the
    # velocity depends on the prompt, the expert and the bridge
    with torch.no_grad():
        for module in (m.video_dit, m.video_dit_2, m.audio_dit, m.bridge):
            for p in module.parameters():
                p.add_(0.02 * torch.randn_like(p))
    return m


def _req(m: MovaModels, **kw) -> DenoiseRequest:
    g = torch.Generator().manual_seed(3)
    text_dim = m.video_dit.config.text_dim
    base = dict(
        context=torch.randn(1, 16, text_dim, generator=g),
        negative_context=torch.randn(1, 16, text_dim, generator=g),
        y=torch.randn(1, 20, 2, 4, 6, generator=g),
        height=32, width=48, num_frames=5, fps=24.0,
        num_inference_steps=4, guidance_scale=5.0, seed=11, audio_latent_length=9,
    )
    base.update(kw)
    return DenoiseRequest(**base)


def test_batched_cfg_equals_two_forwards_on_the_real_model(models):
    a = denoise(models, _req(models), cfg_batch=True)
    b = denoise(models, _req(models), cfg_batch=False)
    torch.testing.assert_close(a.video_latents, b.video_latents, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.audio_latents, b.audio_latents, rtol=1e-5, atol=1e-5)
    # and the negative prompt matters (so the comparison above is not vacuous)
    c = denoise(models, _req(models, negative_context=torch.zeros(1, 16, models.video_dit.config.text_dim)))
    assert (c.video_latents - a.video_latents).abs().max() > 1e-4
    assert (c.audio_latents - a.audio_latents).abs().max() > 1e-4


@pytest.mark.parametrize("cfg_batch", [False, True], ids=["two_forwards", "batched"])
def test_text_keys_and_values_are_computed_once_per_job_per_tower(models, cfg_batch):
    """4 steps, 2 per expert: each tower embeds each context once (the memo hits at every later step), also when
    the two CFG branches run as B=1 forwards."""
    runs = {}
    towers = {"video_dit": models.video_dit, "video_dit_2": models.video_dit_2, "audio_dit": models.audio_dit}
    handles = [tower.text_embedding.register_forward_hook(
        lambda _m, args, _out, name=name: runs.setdefault(name, []).append(args[0].shape[0]))
        for name, tower in towers.items()]
    try:
        denoise(models, _req(models), cfg_batch=cfg_batch)
    finally:
        for h in handles:
            h.remove()
    once = [2] if cfg_batch else [1, 1]  # one B=2 context, or the positive and the negative one
    assert runs == {"video_dit": once, "video_dit_2": once, "audio_dit": once}


def test_resume_equals_uninterrupted_on_the_real_model(models):
    saved = {}
    full = denoise(models, _req(models), on_step=lambda i: saved.setdefault(i.step, i))
    ck = saved[2]  # 4 steps: the expert switch is at step index 2
    resumed = denoise(models, _req(models, start_step=2, video_noise=ck.video_latents, audio_noise=ck.audio_latents))
    assert torch.equal(resumed.video_latents, full.video_latents)
    assert torch.equal(resumed.audio_latents, full.audio_latents)


@pytest.mark.parametrize("audio_scales", [None, (2.0, 1.0)], ids=["same-scales", "audio-own-scales"])
def test_dual_guidance_one_step_is_the_compositional_formula(models, audio_scales):
    """One step is the final Euler step from sigma 1 to 0 (x1 = x0 - v), so the result shows the guided velocity:
    v = v(neg, off) + s_text (v(pos, off) - v(neg, off)) + s_sync (v(pos, on) - v(pos, off)), for the audio with
    its own scales when they are given."""
    s_text, s_sync = 4.0, 2.5
    a_text, a_sync = audio_scales or (s_text, s_sync)
    own = {} if audio_scales is None else {"audio_guidance_scale": a_text, "audio_sync_guidance_scale": a_sync}
    req = _req(models, num_inference_steps=1, guidance_scale=s_text, sync_guidance_scale=s_sync, **own)
    calls = []

    def forward(*args, **kw):
        calls.append((kw["context"].shape[0], kw.get("a2v_condition_scale", 1.0), kw.get("v2a_condition_scale", 1.0)))
        return dual_tower_forward(*args, **kw)

    out = denoise(models, req, forward=forward)
    assert calls == [(1, 1.0, 1.0), (2, 0.0, 0.0)]  # bridge on: positive; bridge off: positive and negative as B=2
    v0, a0 = initial_noise(11, (1, 16, 2, 4, 6), (1, models.audio_dit.config.in_dim, 9))
    t_video, t_audio = models.scheduler.pairs(1)[0].reshape(2, 1)
    kw = dict(video_x=torch.cat([v0, req.y], 1), audio_x=a0, t_video=t_video, t_audio=t_audio, video_fps=24.0)

    def branch(context, bridge: float):
        return dual_tower_forward(models.video_dit, models.audio_dit, models.bridge, context=context,
                                  a2v_condition_scale=bridge, v2a_condition_scale=bridge, **kw)

    (v_on, a_on), (v_off, a_off) = branch(req.context, 1.0), branch(req.context, 0.0)
    v_neg, a_neg = branch(req.negative_context, 0.0)
    assert (v_on - v_off).abs().max() > 1e-4 and (a_on - a_off).abs().max() > 1e-4  # the bridge matters
    torch.testing.assert_close(out.video_latents, v0 - (v_neg + s_text * (v_off - v_neg) + s_sync * (v_on - v_off)))
    torch.testing.assert_close(out.audio_latents, a0 - (a_neg + a_text * (a_off - a_neg) + a_sync * (a_on - a_off)))


def test_dual_guidance_batched_equals_three_forwards_and_unset_is_single_cfg(models):
    dual = _req(models, sync_guidance_scale=3.0)
    a = denoise(models, dual, cfg_batch=True)
    b = denoise(models, dual, cfg_batch=False)
    torch.testing.assert_close(a.video_latents, b.video_latents, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.audio_latents, b.audio_latents, rtol=1e-5, atol=1e-5)
    single = denoise(models, _req(models))
    assert (single.video_latents - a.video_latents).abs().max() > 1e-4
    assert torch.equal(denoise(models, _req(models, sync_guidance_scale=None)).video_latents, single.video_latents)
    # s_text = 1: the negative branch is skipped (two forwards a step) and the negative prompt does not matter
    calls = []
    one = denoise(models, _req(models, guidance_scale=1.0, sync_guidance_scale=3.0),
                  forward=lambda *args, **kw: calls.append(kw["context"].shape[0]) or dual_tower_forward(*args, **kw))
    assert calls == [1, 1] * 4
    other = denoise(models, _req(models, guidance_scale=1.0, sync_guidance_scale=3.0,
                                 negative_context=torch.zeros_like(dual.negative_context)))
    assert torch.equal(one.video_latents, other.video_latents)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_offload_keeps_only_the_active_expert_on_the_gpu(models):
    cuda = torch.device("cuda")
    for name in ("video_dit", "video_dit_2", "audio_dit", "bridge"):
        getattr(models, name).to(cuda)
    try:
        resident = denoise(models, _req(models))
        models.video_dit.to("cpu")
        models.video_dit_2.to("cpu")
        seen = []

        def where(info):
            seen.append((info.expert, next(models.video_dit.parameters()).device.type,
                         next(models.video_dit_2.parameters()).device.type))

        offloaded = denoise(models, _req(models), offload=True, on_step=where)
        assert seen == [("video_dit", "cuda", "cpu")] * 2 + [("video_dit_2", "cpu", "cuda")] * 2
        torch.testing.assert_close(offloaded.video_latents, resident.video_latents, rtol=0, atol=0)
        torch.testing.assert_close(offloaded.audio_latents, resident.audio_latents, rtol=0, atol=0)
    finally:
        for name in ("video_dit", "video_dit_2", "audio_dit", "bridge"):
            getattr(models, name).to("cpu")
