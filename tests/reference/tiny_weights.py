"""Tiny configs (official config.json keys) and seeded random state dicts (official key names).

Built independently of movakit.testing so the exactness tests do not inherit a slip from the
production checkpoint writer. Weights are scaled so activations stay O(1) through a few blocks
(softmax not saturated, gates not ~0), which keeps the comparisons sensitive.
"""

from __future__ import annotations

import math

import torch


def video_dit_config(*, head_dim: int = 24, num_heads: int = 2, num_layers: int = 3, text_dim: int = 32,
                     freq_dim: int = 32, ffn_dim: int = 64) -> dict:
    return {
        "dim": head_dim * num_heads,
        "in_dim": 36,
        "ffn_dim": ffn_dim,
        "out_dim": 16,
        "text_dim": text_dim,
        "freq_dim": freq_dim,
        "eps": 1e-6,
        "patch_size": [1, 2, 2],
        "num_heads": num_heads,
        "num_layers": num_layers,
        "has_image_input": False,
        "has_image_pos_emb": False,
        "has_ref_conv": False,
        "add_control_adapter": False,
        "seperated_timestep": False,
        "require_vae_embedding": True,
        "require_clip_embedding": False,
        "fuse_vae_embedding_in_latents": False,
    }


def audio_dit_config(*, head_dim: int = 24, num_heads: int = 3, num_layers: int = 2, text_dim: int = 32,
                     freq_dim: int = 32, ffn_dim: int = 80, in_dim: int = 128) -> dict:
    return {
        "dim": head_dim * num_heads,
        "in_dim": in_dim,
        "ffn_dim": ffn_dim,
        "out_dim": in_dim,
        "text_dim": text_dim,
        "freq_dim": freq_dim,
        "eps": 1e-6,
        "patch_size": [1],
        "num_heads": num_heads,
        "num_layers": num_layers,
        "has_image_input": False,
        "require_vae_embedding": False,
        "require_clip_embedding": False,
        "vae_type": "dac",
    }


def bridge_config(video_cfg: dict, audio_cfg: dict, *, head_dim: int = 24, audio_fps: float = 50.0) -> dict:
    return {
        "visual_layers": video_cfg["num_layers"],
        "audio_layers": audio_cfg["num_layers"],
        "visual_hidden_dim": video_cfg["dim"],
        "audio_hidden_dim": audio_cfg["dim"],
        "audio_fps": audio_fps,
        "head_dim": head_dim,
        "interaction_strategy": "full",
        "apply_cross_rope": True,
        "apply_first_frame_bias_in_rope": False,
        "trainable_condition_scale": False,
        "pooled_adaln": False,
    }


class _Maker:
    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)
        self.sd: dict[str, torch.Tensor] = {}

    def randn(self, *shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen, dtype=torch.float64) * std

    def linear(self, name: str, out_f: int, in_f: int, gain: float = 1.0) -> None:
        self.sd[name + ".weight"] = self.randn(out_f, in_f, std=gain / math.sqrt(in_f))
        self.sd[name + ".bias"] = self.randn(out_f, std=0.1)

    def norm_weight(self, name: str, dim: int) -> None:
        self.sd[name + ".weight"] = 1.0 + self.randn(dim, std=0.1)

    def layer_norm(self, name: str, dim: int) -> None:
        self.norm_weight(name, dim)
        self.sd[name + ".bias"] = self.randn(dim, std=0.1)


def _dit_common(m: _Maker, cfg: dict, patch_weight_shape: tuple[int, ...]) -> None:
    d, ffn = cfg["dim"], cfg["ffn_dim"]
    fan_in = math.prod(patch_weight_shape[1:])
    m.sd["patch_embedding.weight"] = m.randn(*patch_weight_shape, std=1.0 / math.sqrt(fan_in))
    m.sd["patch_embedding.bias"] = m.randn(d, std=0.1)
    m.linear("text_embedding.0", d, cfg["text_dim"])
    m.linear("text_embedding.2", d, d)
    m.linear("time_embedding.0", d, cfg["freq_dim"])
    m.linear("time_embedding.2", d, d)
    m.linear("time_projection.1", 6 * d, d, gain=0.5)
    for i in range(cfg["num_layers"]):
        p = f"blocks.{i}"
        for part in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o"):
                m.linear(f"{p}.{part}.{proj}", d, d)
            m.norm_weight(f"{p}.{part}.norm_q", d)
            m.norm_weight(f"{p}.{part}.norm_k", d)
        m.layer_norm(f"{p}.norm3", d)
        m.linear(f"{p}.ffn.0", ffn, d)
        m.linear(f"{p}.ffn.2", d, ffn)
        m.sd[f"{p}.modulation"] = m.randn(1, 6, d, std=1.0 / math.sqrt(d))
    out = cfg["out_dim"] * math.prod(cfg["patch_size"])
    m.linear("head.head", out, d)
    m.sd["head.modulation"] = m.randn(1, 2, d, std=1.0 / math.sqrt(d))


def video_dit_state_dict(cfg: dict, seed: int) -> dict[str, torch.Tensor]:
    """float64 tensors under the official WanModel key names."""
    m = _Maker(seed)
    _dit_common(m, cfg, (cfg["dim"], cfg["in_dim"], *cfg["patch_size"]))
    return m.sd


def audio_dit_state_dict(cfg: dict, seed: int) -> dict[str, torch.Tensor]:
    """float64 tensors under the official WanAudioModel key names."""
    m = _Maker(seed)
    _dit_common(m, cfg, (cfg["dim"], cfg["in_dim"], *cfg["patch_size"]))
    return m.sd


def bridge_state_dict(cfg: dict, seed: int) -> dict[str, torch.Tensor]:
    """float64 tensors under the official DualTowerConditionalBridge key names."""
    m = _Maker(seed)
    vd, ad = cfg["visual_hidden_dim"], cfg["audio_hidden_dim"]
    for i in range(min(cfg["visual_layers"], cfg["audio_layers"])):
        for direction, q_dim, kv_dim in (("audio_to_video_conditioners", vd, ad),
                                         ("video_to_audio_conditioners", ad, vd)):
            p = f"{direction}.{i}"
            m.layer_norm(f"{p}.y_norm", kv_dim)
            m.linear(f"{p}.inner.q", q_dim, q_dim)
            m.linear(f"{p}.inner.k", q_dim, kv_dim)
            m.linear(f"{p}.inner.v", q_dim, kv_dim)
            m.linear(f"{p}.inner.o", q_dim, q_dim)
            m.norm_weight(f"{p}.inner.norm_q", q_dim)
            m.norm_weight(f"{p}.inner.norm_k", q_dim)
    return m.sd


def cast(sd: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) for k, v in sd.items()}
