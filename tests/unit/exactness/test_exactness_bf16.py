"""bf16 (the release dtype) against the reference run on the same bf16-rounded weights and inputs.

The time embedding must be computed in float32 even with bf16 weights (docs/model.md#dit-block: the official
code relies on a float32 autocast), so it is held to float32 accuracy. The whole joint forward in bf16 can
only be held to bf16 accuracy; that check catches dtype slips (a stray float32 tensor, a missed cast) and
gross errors, not rounding-order differences.
"""

from __future__ import annotations

import exactness_setup as es
import mova_reference as ref
import torch

from movakit.models.audio_dit import AudioDiT, AudioDiTConfig
from movakit.models.bridge import BridgeConfig, DualTowerBridge
from movakit.models.dual_tower import dual_tower_forward
from movakit.models.video_dit import VideoDiT, VideoDiTConfig

BF16 = torch.bfloat16


def _rounded(sd: dict) -> dict:
    return {k: v.to(BF16).to(torch.float64) for k, v in sd.items()}


def _bf16_family():
    fam = es.make_family(head_dim=24, video_heads=2, audio_heads=3, video_layers=3, audio_layers=2, seed=70)
    return es.Family(
        video_cfg=fam.video_cfg, audio_cfg=fam.audio_cfg, bridge_cfg=fam.bridge_cfg,
        video_sd=_rounded(fam.video_sd), video_2_sd=_rounded(fam.video_2_sd), audio_sd=_rounded(fam.audio_sd),
        bridge_sd=_rounded(fam.bridge_sd),
    )


def _modules(fam):
    video = VideoDiT(VideoDiTConfig.from_dict(fam.video_cfg)).to(BF16)
    video.load_state_dict({k: v.to(BF16) for k, v in fam.video_sd.items()}, strict=True)
    audio = AudioDiT(AudioDiTConfig.from_dict(fam.audio_cfg)).to(BF16)
    audio.load_state_dict({k: v.to(BF16) for k, v in fam.audio_sd.items()}, strict=True)
    bridge = DualTowerBridge(BridgeConfig.from_dict(fam.bridge_cfg)).to(BF16)
    bridge.load_state_dict({k: v.to(BF16) for k, v in fam.bridge_sd.items()}, strict=True)
    return video.eval(), audio.eval(), bridge.eval()


def test_time_embedding_of_bf16_weights_is_computed_in_float32():
    fam = _bf16_family()
    video, audio, _ = _modules(fam)
    t = torch.tensor([1000.0, 991.7611, 105.03486])
    for model, sd, cfg in ((video, fam.video_sd, fam.video_cfg), (audio, fam.audio_sd, fam.audio_cfg)):
        with torch.no_grad():
            t_emb, t_mod = model.time_embedding_fp32(t)
        r_emb, r_mod = ref.time_embeddings(sd, ref.TowerDims.from_config(cfg), t)
        assert t_emb.dtype == torch.float32 and t_mod.dtype == torch.float32
        es.assert_rel_close(t_emb, r_emb, 1e-5, "t_emb from bf16 weights")
        es.assert_rel_close(t_mod, r_mod, 1e-5, "t_mod from bf16 weights")


def test_dual_tower_forward_in_bf16_is_within_bf16_accuracy():
    fam = _bf16_family()
    video, audio, bridge = _modules(fam)
    vx = es.randn(2, 36, 3, 4, 6, seed=71).to(BF16)
    ax = es.randn(2, 128, 17, seed=72).to(BF16)
    ctx = es.randn(2, 7, fam.video_cfg["text_dim"], seed=73).to(BF16)
    t = torch.tensor([950.0, 950.0])
    with torch.no_grad():
        gv, ga = dual_tower_forward(video, audio, bridge, video_x=vx, audio_x=ax, context=ctx, t_video=t,
                                    t_audio=t, video_fps=24.0)
    assert gv.dtype == torch.float32 and ga.dtype == torch.float32
    for b in range(2):
        rv, ra = ref.dual_tower_forward(fam.video_sd, fam.video_cfg, fam.audio_sd, fam.audio_cfg, fam.bridge_sd,
                                        fam.bridge_cfg, video_x=vx[b:b + 1], audio_x=ax[b:b + 1],
                                        context=ctx[b:b + 1], t_video=t[b:b + 1], t_audio=t[b:b + 1],
                                        video_fps=24.0)
        es.assert_rel_close(gv[b:b + 1], rv, 5e-2, f"bf16 video velocity, sample {b}")
        es.assert_rel_close(ga[b:b + 1], ra, 5e-2, f"bf16 audio velocity, sample {b}")
