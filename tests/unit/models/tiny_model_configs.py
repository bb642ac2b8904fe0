"""Tiny and real-size configs and builders for the model tests (official config.json keys, as the release writes them).

A plain module (not conftest.py) so the tests can import it without clashing with other folders' conftest modules.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

KEYS_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "keys"

# docs/checkpoint.md#configs-come-from-the-folder: the released configs (360p and 720p are the same architecture).
REAL_VIDEO_DIT = dict(
    _class_name="WanModel", dim=5120, in_dim=36, ffn_dim=13824, out_dim=16, text_dim=4096, freq_dim=256, eps=1e-6,
    patch_size=[1, 2, 2], num_heads=40, num_layers=40, has_image_input=False, has_image_pos_emb=False,
    has_ref_conv=False, add_control_adapter=False, in_dim_control_adapter=24, seperated_timestep=False,
    require_vae_embedding=True, require_clip_embedding=False, fuse_vae_embedding_in_latents=False,
)
REAL_AUDIO_DIT = dict(
    _class_name="WanAudioModel", dim=1536, in_dim=128, ffn_dim=8960, out_dim=128, text_dim=4096, freq_dim=256,
    eps=1e-6, patch_size=[1], num_heads=12, num_layers=30, has_image_input=False, has_image_pos_emb=False,
    has_ref_conv=False, add_control_adapter=False, in_dim_control_adapter=24, seperated_timestep=False,
    require_vae_embedding=False, require_clip_embedding=False, fuse_vae_embedding_in_latents=False, vae_type="dac",
)
REAL_BRIDGE = dict(
    _class_name="DualTowerConditionalBridge", visual_layers=40, audio_layers=30, visual_hidden_dim=5120,
    audio_hidden_dim=1536, audio_fps=50.0, head_dim=128, interaction_strategy="full", apply_cross_rope=True,
    apply_first_frame_bias_in_rope=False, trainable_condition_scale=False, pooled_adaln=False,
)


def tiny_video_dit(**over) -> dict:
    """head_dim 24 (RoPE 8/8/8), 3 layers: one more than the tiny audio tower, so a block runs without bridge."""
    cfg = dict(REAL_VIDEO_DIT, dim=48, ffn_dim=64, text_dim=32, num_heads=2, num_layers=3)
    cfg.update(over)
    return cfg


def tiny_audio_dit(**over) -> dict:
    cfg = dict(REAL_AUDIO_DIT, in_dim=8, out_dim=8, dim=36, ffn_dim=40, text_dim=32, num_heads=3, num_layers=2)
    cfg.update(over)
    return cfg


def tiny_bridge(**over) -> dict:
    cfg = dict(REAL_BRIDGE, visual_layers=3, audio_layers=2, visual_hidden_dim=48, audio_hidden_dim=36, head_dim=12)
    cfg.update(over)
    return cfg


_NORM_WEIGHTS = ("norm_q.weight", "norm_k.weight", "norm3.weight", "y_norm.weight")
_NORM_BIASES = ("norm3.bias", "y_norm.bias")


def build(cls, config_cls, cfg: dict, seed: int) -> torch.nn.Module:
    """Seeded model; norm weights/biases are randomised too, so a skipped affine or norm shows in the outputs."""
    torch.manual_seed(seed)
    model = cls(config_cls.from_dict(cfg))
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(_NORM_WEIGHTS):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith(_NORM_BIASES):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return model.eval()


def key_listing(module: torch.nn.Module) -> list[str]:
    """One line per state_dict entry: `<key>\\t<JSON list of dims>` (the format of tests/fixtures/keys/*.txt)."""
    return [f"{k}\t{json.dumps(list(v.shape))}" for k, v in module.state_dict().items()]


def read_key_listing(name: str) -> list[str]:
    return (KEYS_DIR / f"{name}.txt").read_text(encoding="utf-8").splitlines()
