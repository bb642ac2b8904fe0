"""Shared setup for tests/unit/exactness: tiny model families (configs + seeded official-key state dicts),
the reference velocity function, and a relative-error assertion that names what differed."""

from __future__ import annotations

from dataclasses import dataclass

import mova_reference as ref
import tiny_weights as tw
import torch


@dataclass(frozen=True)
class Family:
    """One tiny MOVA: two video experts, the audio DiT and the bridge, float64 official-key state dicts."""

    video_cfg: dict
    audio_cfg: dict
    bridge_cfg: dict
    video_sd: dict
    video_2_sd: dict
    audio_sd: dict
    bridge_sd: dict

    def expert_sd(self, expert: int) -> dict:
        return self.video_sd if expert == 0 else self.video_2_sd


def make_family(*, head_dim: int = 24, video_heads: int = 2, audio_heads: int = 3, video_layers: int = 3,
                audio_layers: int = 2, text_dim: int = 32, seed: int = 0) -> Family:
    vc = tw.video_dit_config(head_dim=head_dim, num_heads=video_heads, num_layers=video_layers, text_dim=text_dim)
    ac = tw.audio_dit_config(head_dim=head_dim, num_heads=audio_heads, num_layers=audio_layers, text_dim=text_dim)
    bc = tw.bridge_config(vc, ac, head_dim=head_dim)
    return Family(
        video_cfg=vc, audio_cfg=ac, bridge_cfg=bc,
        video_sd=tw.video_dit_state_dict(vc, seed + 1),
        video_2_sd=tw.video_dit_state_dict(vc, seed + 2),
        audio_sd=tw.audio_dit_state_dict(ac, seed + 3),
        bridge_sd=tw.bridge_state_dict(bc, seed + 4),
    )


def reference_velocity_fn(fam: Family, video_fps: float):
    """velocity_fn for sampler_reference.reference_sample: the float64 reference joint forward, returned as float32."""

    def fn(expert, video_in, audio_in, context, t_v, t_a):
        v, a = ref.dual_tower_forward(
            fam.expert_sd(expert), fam.video_cfg, fam.audio_sd, fam.audio_cfg, fam.bridge_sd, fam.bridge_cfg,
            video_x=video_in, audio_x=audio_in, context=context, t_video=t_v, t_audio=t_a, video_fps=video_fps,
        )
        return v.to(torch.float32), a.to(torch.float32)

    return fn


def rel_err(got: torch.Tensor, expect: torch.Tensor) -> float:
    """max |got - expect| / max |expect| (computed in float64)."""
    got64, exp64 = got.detach().to(torch.float64), expect.detach().to(torch.float64)
    return ((got64 - exp64).abs().max() / exp64.abs().max().clamp_min(1e-30)).item()


def assert_rel_close(got: torch.Tensor, expect: torch.Tensor, rel: float, what: str) -> None:
    assert tuple(got.shape) == tuple(expect.shape), f"{what}: shape {tuple(got.shape)} != {tuple(expect.shape)}"
    err = rel_err(got, expect)
    assert err <= rel, f"{what}: max relative error {err:.3e} > {rel:.1e}"


def randn(*shape: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)
