"""H1's DualTowerBridge and dual_tower_forward against the reference: aligned rotate-half RoPE tables, one
bridge layer (parallel pre-update rule, y_norm on the conditioning stream only), and the whole joint forward
(loop order, extra video blocks without bridge) for B=1 and a CFG-style B=2, at 24 and 30 fps."""

from __future__ import annotations

import exactness_setup as es
import mova_reference as ref
import pytest
import torch

from movakit.models.audio_dit import AudioDiT, AudioDiTConfig
from movakit.models.bridge import BridgeConfig, DualTowerBridge
from movakit.models.dual_tower import dual_tower_forward
from movakit.models.video_dit import VideoDiT, VideoDiTConfig

F32_REL = 1e-5
F64_REL = 1e-6  # H1 builds the bridge cos/sin in float32 (as the official code); float64 runs agree to ~1e-7
GRID = (3, 4, 6)  # latent (F, H/8, W/8) -> video tokens (3, 2, 3)
AUDIO_LEN = 21  # > 2 * 8.33: the video frames land inside the audio axis


def _modules(fam: es.Family, dtype: torch.dtype, expert: int = 0):
    video = VideoDiT(VideoDiTConfig.from_dict(fam.video_cfg)).to(dtype)
    video.load_state_dict({k: v.to(dtype) for k, v in fam.expert_sd(expert).items()}, strict=True)
    audio = AudioDiT(AudioDiTConfig.from_dict(fam.audio_cfg)).to(dtype)
    audio.load_state_dict({k: v.to(dtype) for k, v in fam.audio_sd.items()}, strict=True)
    bridge = DualTowerBridge(BridgeConfig.from_dict(fam.bridge_cfg)).to(dtype)
    bridge.load_state_dict({k: v.to(dtype) for k, v in fam.bridge_sd.items()}, strict=True)
    return video.eval(), audio.eval(), bridge.eval()


@pytest.fixture(scope="module", params=[24, 12], ids=["hd24", "hd12"])
def fam(request):
    hd = request.param
    return es.make_family(head_dim=hd, video_heads=2, audio_heads=3, video_layers=3, audio_layers=2, seed=hd)


def test_bridge_state_dict_keys_are_official(fam):
    _, _, bridge = _modules(fam, torch.float32)
    assert {k: tuple(v.shape) for k, v in bridge.state_dict().items()} == {
        k: tuple(v.shape) for k, v in fam.bridge_sd.items()}


@pytest.mark.parametrize("fps", [24.0, 30.0])
def test_aligned_rope_tables(fam, fps):
    _, _, bridge = _modules(fam, torch.float64)
    bd = ref.BridgeDims.from_config(fam.bridge_cfg)
    (vc, vs), (ac, as_) = bridge.build_aligned_rope((3, 2, 3), AUDIO_LEN, video_fps=fps, device="cpu",
                                                    dtype=torch.float64)
    (rvc, rvs), (rac, ras) = ref.bridge_tables(bd, (3, 2, 3), AUDIO_LEN, fps)
    for got, exp, name in ((vc, rvc, "video cos"), (vs, rvs, "video sin"), (ac, rac, "audio cos"),
                           (as_, ras, "audio sin")):
        assert tuple(got.reshape(exp.shape).shape) == tuple(exp.shape)
        assert (got.reshape(exp.shape) - exp).abs().max().item() < 1e-5, f"bridge {name} table at {fps} fps"


@pytest.mark.parametrize("dtype,rel", [(torch.float32, F32_REL), (torch.float64, F64_REL)], ids=["f32", "f64"])
@pytest.mark.parametrize("scales", [(1.0, 1.0), (0.5, 2.0)], ids=["scale1", "scales"])
def test_one_bridge_layer(fam, dtype, rel, scales):
    _, _, bridge = _modules(fam, dtype)
    bd = ref.BridgeDims.from_config(fam.bridge_cfg)
    grid = (3, 2, 3)
    vx = es.randn(2, 18, bd.visual_hidden_dim, seed=20)
    ax = es.randn(2, AUDIO_LEN, bd.audio_hidden_dim, seed=21)
    v_rope, a_rope = bridge.build_aligned_rope(grid, AUDIO_LEN, video_fps=24.0, device="cpu", dtype=dtype)
    with torch.no_grad():
        gv, ga = bridge(1, vx.to(dtype), ax.to(dtype), video_rope=v_rope, audio_rope=a_rope,
                        a2v_condition_scale=scales[0], v2a_condition_scale=scales[1])
    v_cs, a_cs = ref.bridge_tables(bd, grid, AUDIO_LEN, 24.0)
    rv, ra = ref.bridge_layer(fam.bridge_sd, 1, bd, vx, ax, v_cs, a_cs, a2v_scale=scales[0], v2a_scale=scales[1])
    # compare the residual updates: they are what the bridge adds (the streams themselves dominate otherwise)
    es.assert_rel_close(gv.to(torch.float64) - vx, rv - vx, rel, "a2v update (video stream)")
    es.assert_rel_close(ga.to(torch.float64) - ax, ra - ax, rel, "v2a update (audio stream)")


@pytest.mark.parametrize("dtype,rel", [(torch.float32, F32_REL), (torch.float64, F64_REL)], ids=["f32", "f64"])
@pytest.mark.parametrize("fps", [24.0, 30.0])
def test_dual_tower_forward_batch_one(fam, dtype, rel, fps):
    video, audio, bridge = _modules(fam, dtype)
    vx = es.randn(1, 36, *GRID, seed=30)
    ax = es.randn(1, 128, AUDIO_LEN, seed=31)
    ctx = es.randn(1, 7, fam.video_cfg["text_dim"], seed=32)
    tv, ta = torch.tensor([991.7611]), torch.tensor([991.7611])
    with torch.no_grad():
        gv, ga = dual_tower_forward(video, audio, bridge, video_x=vx.to(dtype), audio_x=ax.to(dtype),
                                    context=ctx.to(dtype), t_video=tv, t_audio=ta, video_fps=fps)
    rv, ra = ref.dual_tower_forward(fam.video_sd, fam.video_cfg, fam.audio_sd, fam.audio_cfg, fam.bridge_sd,
                                    fam.bridge_cfg, video_x=vx, audio_x=ax, context=ctx, t_video=tv, t_audio=ta,
                                    video_fps=fps)
    assert gv.dtype == torch.float32 and ga.dtype == torch.float32
    es.assert_rel_close(gv, rv, rel, f"video velocity ({dtype}, {fps} fps)")
    es.assert_rel_close(ga, ra, rel, f"audio velocity ({dtype}, {fps} fps)")


def test_dual_tower_forward_cfg_batch_two_equals_per_sample_reference(fam):
    """B=2 = [positive, negative] contexts, same latents and timestep (how the sampler batches CFG), and
    also different timesteps per sample."""
    video, audio, bridge = _modules(fam, torch.float32, expert=1)
    vx = es.randn(1, 36, *GRID, seed=40).expand(2, -1, -1, -1, -1)
    ax = es.randn(1, 128, AUDIO_LEN, seed=41).expand(2, -1, -1)
    ctx = es.randn(2, 7, fam.video_cfg["text_dim"], seed=42)
    tv = torch.tensor([834.4, 105.03486])
    ta = torch.tensor([700.0, 105.03486])
    with torch.no_grad():
        gv, ga = dual_tower_forward(video, audio, bridge, video_x=vx.float(), audio_x=ax.float(),
                                    context=ctx.float(), t_video=tv, t_audio=ta, video_fps=24.0)
    for b in range(2):
        rv, ra = ref.dual_tower_forward(fam.video_2_sd, fam.video_cfg, fam.audio_sd, fam.audio_cfg, fam.bridge_sd,
                                        fam.bridge_cfg, video_x=vx[b:b + 1], audio_x=ax[b:b + 1],
                                        context=ctx[b:b + 1], t_video=tv[b:b + 1], t_audio=ta[b:b + 1],
                                        video_fps=24.0)
        es.assert_rel_close(gv[b:b + 1], rv, F32_REL, f"video velocity, batch sample {b}")
        es.assert_rel_close(ga[b:b + 1], ra, F32_REL, f"audio velocity, batch sample {b}")


def test_release_head_dim_128_joint_forward():
    """head_dim 128 as in the release: video RoPE split 44/42/42, audio 1-D over 64 pairs, bridge 64 pairs."""
    fam = es.make_family(head_dim=128, video_heads=1, audio_heads=1, video_layers=2, audio_layers=1, seed=128)
    video, audio, bridge = _modules(fam, torch.float32)
    grid = (3, 2, 4)
    angles = ref.video_rope_angles(128, (3, 1, 2))
    freqs = video.rope_freqs((3, 1, 2)).reshape(angles.shape)
    assert torch.allclose(freqs, torch.polar(torch.ones_like(angles), angles), rtol=0, atol=1e-12)
    vx = es.randn(1, 36, *grid, seed=130)
    ax = es.randn(1, 128, 19, seed=131)
    ctx = es.randn(1, 5, fam.video_cfg["text_dim"], seed=132)
    t = torch.tensor([900.5])
    with torch.no_grad():
        gv, ga = dual_tower_forward(video, audio, bridge, video_x=vx.float(), audio_x=ax.float(), context=ctx.float(),
                                    t_video=t, t_audio=t, video_fps=24.0)
    rv, ra = ref.dual_tower_forward(fam.video_sd, fam.video_cfg, fam.audio_sd, fam.audio_cfg, fam.bridge_sd,
                                    fam.bridge_cfg, video_x=vx, audio_x=ax, context=ctx, t_video=t, t_audio=t,
                                    video_fps=24.0)
    es.assert_rel_close(gv, rv, F32_REL, "video velocity, head_dim 128")
    es.assert_rel_close(ga, ra, F32_REL, "audio velocity, head_dim 128")
