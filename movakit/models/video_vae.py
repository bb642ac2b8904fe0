"""The MOVA video VAE: diffusers `AutoencoderKLWan` (Wan2.1 causal 3-D VAE) plus latent normalisation.

Normalised latents are what the DiTs see: z_norm = (z - latents_mean) * (1 / latents_std) with the per-channel
statistics from `video_vae/config.json` (diffusers Wan convention, docs/model.md#video-vae). Encode takes the
posterior mode; decode denormalises, runs the VAE and clamps to [-1, 1]. Built and loaded by
movakit.loading.components.load_video_vae.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan
from torch import nn


class VideoVAE(nn.Module):
    """Thin wrapper over an `AutoencoderKLWan`; checkpoints load into `.vae` (the diffusers key names)."""

    def __init__(self, vae: AutoencoderKLWan):
        super().__init__()
        self.vae = vae
        cfg = vae.config
        if len(cfg.latents_mean) != cfg.z_dim or len(cfg.latents_std) != cfg.z_dim:
            raise ValueError(
                f"video_vae config latents_mean/latents_std: expected {cfg.z_dim} values each, "
                f"got {len(cfg.latents_mean)}/{len(cfg.latents_std)}"
            )
        if any(s <= 0 for s in cfg.latents_std):
            raise ValueError("video_vae config latents_std: every value must be positive")
        shape = (1, cfg.z_dim, 1, 1, 1)
        self.register_buffer("latents_mean", torch.tensor(cfg.latents_mean, dtype=torch.float32).view(shape), False)
        self.register_buffer("latents_std", torch.tensor(cfg.latents_std, dtype=torch.float32).view(shape), False)

    @property
    def spatial_scale(self) -> int:
        return int(self.vae.config.scale_factor_spatial)

    @property
    def temporal_scale(self) -> int:
        return int(self.vae.config.scale_factor_temporal)

    @property
    def z_dim(self) -> int:
        return int(self.vae.config.z_dim)

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.post_quant_conv.weight.dtype

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(z_dim, T, H/8, W/8) for a clip of `num_frames` frames (must be 4k+1) of height x width pixels."""
        t, s = self.temporal_scale, self.spatial_scale
        if num_frames % t != 1:
            raise ValueError(f"num_frames: {num_frames} is not {t}k+1")
        if height % s or width % s:
            raise ValueError(f"height/width: {height}x{width} is not a multiple of {s}")
        return (self.z_dim, (num_frames - 1) // t + 1, height // s, width // s)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """(z - mean) * (1 / std) in float32: the official multiplies by the reciprocal (bit-exact with it)."""
        return (z.float() - self.latents_mean) * (1.0 / self.latents_std)

    def denormalize(self, z_norm: torch.Tensor) -> torch.Tensor:
        return z_norm.float() * self.latents_std + self.latents_mean

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B,3,N,H,W) in [-1,1] -> normalised posterior mode (B,z_dim,T,H/8,W/8), float32."""
        if pixels.dim() != 5 or pixels.shape[1] != 3:
            raise ValueError(f"video_vae.encode pixels: expected (B,3,N,H,W), got {tuple(pixels.shape)}")
        self.latent_shape(pixels.shape[2], pixels.shape[3], pixels.shape[4])  # validates N, H, W
        posterior = self.vae.encode(pixels.to(self.dtype)).latent_dist
        return self.normalize(posterior.mode())

    def decode(self, z_norm: torch.Tensor) -> torch.Tensor:
        """normalised latents (B,z_dim,T,h,w) -> pixels (B,3,4(T-1)+1,8h,8w) in [-1,1], float32."""
        if z_norm.dim() != 5 or z_norm.shape[1] != self.z_dim:
            raise ValueError(f"video_vae.decode z: expected (B,{self.z_dim},T,h,w), got {tuple(z_norm.shape)}")
        z = self.denormalize(z_norm).to(self.dtype)
        pixels = self.vae.decode(z).sample
        return pixels.float().clamp(-1.0, 1.0)
