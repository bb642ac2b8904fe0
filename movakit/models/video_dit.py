"""MOVA video DiT (official class ``WanModel``, Wan2.2-I2V-A14B architecture): VideoDiT + VideoDiTConfig.

One instance is one expert (``video_dit`` high-noise or ``video_dit_2`` low-noise); which expert runs is the
sampler's business. Input (B, in_dim=36, F, H, W) = noisy latent (16) + mask (4) + image latent (16); output the
velocity (B, out_dim=16, F, H, W). Math and key names: docs/model.md#dit-block, docs/checkpoint.md#key-names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from movakit.config import JsonConfig, check_dit_config
from movakit.models.layers.dit_block import DiTTower
from movakit.models.layers.rope import video_rope_freqs, video_rope_split

_COMPONENT = "video_dit"
# Alternative spelling used by SGLang's config dataclass for the official (misspelt) "seperated_timestep".
_ALIASES = {"separated_timestep": "seperated_timestep"}


@dataclass(frozen=True)
class VideoDiTConfig(JsonConfig):
    """Architecture of one video expert, from video_dit/config.json (official key names).

    Fields without a default must be in the file. The flags with defaults carry the official constructor's default
    (what the official code uses when a key is absent); values the release does not use raise NotImplementedError.
    """

    dim: int
    in_dim: int
    ffn_dim: int
    out_dim: int
    text_dim: int
    freq_dim: int
    eps: float
    patch_size: tuple[int, int, int]
    num_heads: int
    num_layers: int
    has_image_input: bool  # CLIP image branch; the release uses false (image enters as latent channels)
    has_image_pos_emb: bool = False
    has_ref_conv: bool = False
    add_control_adapter: bool = False
    in_dim_control_adapter: int = 24  # only used with add_control_adapter
    seperated_timestep: bool = False  # official spelling
    require_vae_embedding: bool = True  # pipeline-side flag; no effect on the module
    require_clip_embedding: bool = True  # pipeline-side flag; the release uses false
    fuse_vae_embedding_in_latents: bool = False

    COMPONENT = _COMPONENT
    ALIASES = _ALIASES

    def __post_init__(self) -> None:
        check_dit_config(self, component=_COMPONENT)
        video_rope_split(self.dim // self.num_heads)  # ValueError if the head does not split into even RoPE parts

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


class VideoDiT(DiTTower):
    """The video tower. ``forward`` (DiTTower's) runs it alone on x (B, in_dim, F, H, W) -> (B, out_dim, F, H, W);
    the dual-tower forward uses the pieces."""

    def __init__(self, config: VideoDiTConfig):
        super().__init__(config, nn.Conv3d, "video")

    def patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """x (B, in_dim, F, H, W) -> tokens (B, f*h*w, D) in (f, h, w) order, grid (f, h, w)."""
        if x.ndim != 5 or x.shape[1] != self.config.in_dim:
            raise ValueError(f"video_x must have shape (B, {self.config.in_dim}, F, H, W), got {tuple(x.shape)}")
        for axis, size, p in zip("FHW", x.shape[2:], self.config.patch_size):
            if size % p:
                raise ValueError(f"video_x: {axis}={size} is not divisible by the patch size {p}")
        x = x.to(self.dtype)
        if x.is_cuda:  # channels-last input keeps cuDNN off PyTorch's slow conv3d path (the official code does this)
            x = x.contiguous(memory_format=torch.channels_last_3d)
        y = self.patch_embedding(x)  # (B, D, f, h, w)
        grid = (y.shape[2], y.shape[3], y.shape[4])
        # contiguous (B, L, D): a transposed view would keep every later residual stream feature-major
        return y.flatten(2).transpose(1, 2).contiguous(), grid  # (B, f*h*w, D)

    def rope_freqs(self, grid: tuple[int, int, int], device: torch.device | str | None = None) -> torch.Tensor:
        """complex128 (f*h*w, 1, head_dim/2) 3-D RoPE table for a token grid (on the model's device by default)."""
        return video_rope_freqs(self.head_dim, grid, self.device if device is None else device)

    def unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, f*h*w, pt*ph*pw*out_dim) with channel fastest -> (B, out_dim, f*pt, h*ph, w*pw)."""
        f, h, w = grid
        pt, ph, pw = self.config.patch_size
        b = tokens.shape[0]
        x = tokens.reshape(b, f, h, w, pt, ph, pw, self.config.out_dim)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, c, f, pt, h, ph, w, pw)
        return x.reshape(b, self.config.out_dim, f * pt, h * ph, w * pw)
