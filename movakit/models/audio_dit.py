"""MOVA audio DiT (official class ``WanAudioModel``, Wan2.1-1.3B shape with 1-D patching): AudioDiT + AudioDiTConfig.

Input (B, in_dim=128, L) raw DAC latents (50 Hz), one token per latent frame; output the velocity (B, out_dim, L).
Same block as the video tower; RoPE is plain 1-D over the whole head ("dac" variant). docs/model.md#audio-dit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from movakit.config import JsonConfig, check_dit_config, reject_flag
from movakit.models.layers.dit_block import DiTTower
from movakit.models.layers.rope import audio_rope_freqs

_COMPONENT = "audio_dit"
_ALIASES = {"separated_timestep": "seperated_timestep"}


@dataclass(frozen=True)
class AudioDiTConfig(JsonConfig):
    """Architecture of the audio tower, from audio_dit/config.json (official key names).

    Fields without a default must be in the file; flag defaults are the official constructor's defaults (note
    vae_type defaults to "oobleck" there, which this implementation does not support: the release says "dac").
    """

    dim: int
    in_dim: int
    ffn_dim: int
    out_dim: int
    text_dim: int
    freq_dim: int
    eps: float
    patch_size: tuple[int]
    num_heads: int
    num_layers: int
    has_image_input: bool
    has_image_pos_emb: bool = False
    has_ref_conv: bool = False
    add_control_adapter: bool = False
    in_dim_control_adapter: int = 24
    seperated_timestep: bool = False
    require_vae_embedding: bool = True  # pipeline-side flag; no effect on the module (the release has false)
    require_clip_embedding: bool = True  # pipeline-side flag; the release uses false
    fuse_vae_embedding_in_latents: bool = False
    vae_type: str = "oobleck"

    COMPONENT = _COMPONENT
    ALIASES = _ALIASES

    def __post_init__(self) -> None:
        check_dit_config(self, component=_COMPONENT)
        if (self.dim // self.num_heads) % 2:
            raise ValueError(f"{_COMPONENT} config: head_dim {self.dim // self.num_heads} must be even for RoPE")
        reject_flag(self, "vae_type", "dac", component=_COMPONENT)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


class AudioDiT(DiTTower):
    """The audio tower. ``forward`` (DiTTower's) runs it alone on x (B, in_dim, L) -> (B, out_dim, L); the
    dual-tower forward uses the pieces."""

    def __init__(self, config: AudioDiTConfig):
        super().__init__(config, nn.Conv1d, "audio")

    def patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int]]:
        """x (B, in_dim, L) -> tokens (B, L / p, D), grid (L / p,)."""
        if x.ndim != 3 or x.shape[1] != self.config.in_dim:
            raise ValueError(f"audio_x must have shape (B, {self.config.in_dim}, L), got {tuple(x.shape)}")
        if x.shape[2] % self.config.patch_size[0]:
            raise ValueError(f"audio_x: L={x.shape[2]} is not divisible by the patch size {self.config.patch_size[0]}")
        y = self.patch_embedding(x.to(self.dtype))  # (B, D, f)
        return y.transpose(1, 2).contiguous(), (y.shape[2],)  # (B, f, D), token-major like the video tokens

    def rope_freqs(self, grid: tuple[int], device: torch.device | str | None = None) -> torch.Tensor:
        """complex128 (f, 1, head_dim/2) 1-D RoPE table (on the model's device by default)."""
        return audio_rope_freqs(self.head_dim, grid[0], self.device if device is None else device)

    def unpatchify(self, tokens: torch.Tensor, grid: tuple[int]) -> torch.Tensor:
        """(B, f, p*out_dim) with channel fastest -> (B, out_dim, f*p)."""
        (f,) = grid
        p = self.config.patch_size[0]
        b = tokens.shape[0]
        x = tokens.reshape(b, f, p, self.config.out_dim).permute(0, 3, 1, 2)  # (B, c, f, p)
        return x.reshape(b, self.config.out_dim, f * p)
