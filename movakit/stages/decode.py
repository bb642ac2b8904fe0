"""Decode stage: final latents -> uint8 video frames and a float32 waveform (docs/sampler.md#steps, steps 6-7).

  video: VideoVAE.decode de-normalises with latents_mean/std and decodes (under bf16 autocast on CUDA, as the
         official pipeline); pixels in [-1, 1] -> x/2 + 0.5 clamped to [0, 1] (in bf16 on CUDA, float32 on CPU,
         the decoder's output dtype) -> ×255 rounded -> uint8 (N, H, W, 3);
  audio: DacVAE.decode in float32 -> (1, 1, hop·L_a) in [-1, 1] -> (hop·L_a,) float32. The waveform is not
         trimmed: as in the official save path, the mux's -shortest trims the longer stream.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from movakit.request import GenerationRequest


class DecoderModels(Protocol):
    """What this stage reads from the loaded checkpoint (movakit.loading.MovaModels has these fields)."""

    video_vae: object | None  # movakit.models.video_vae.VideoVAE
    audio_vae: torch.nn.Module | None  # movakit.models.audio_vae.DacVAE


@dataclass(frozen=True)
class DecodeRequest:
    video_latents: torch.Tensor  # (1, z_dim, T_lat, H/8, W/8) normalised, as the sampler ends it
    audio_latents: torch.Tensor  # (1, latent_dim, L_a) raw DAC latent
    fps: float


def decode_request(req: GenerationRequest, video_latents: torch.Tensor, audio_latents: torch.Tensor) -> DecodeRequest:
    """The decode stage's request for a resolved generation request and the denoiser's final latents (the embedded
    pipeline and the decoder service both build it here)."""
    req.require_resolved()
    return DecodeRequest(video_latents=video_latents, audio_latents=audio_latents, fps=req.fps)


@dataclass(frozen=True)
class DecodeResult:
    frames: np.ndarray  # (N, H, W, 3) uint8, N = (T_lat - 1)·temporal_scale + 1
    audio: np.ndarray  # (hop·L_a,) float32 in [-1, 1]
    sample_rate: int
    fps: float  # carried through for the mux (movakit.media.write_outputs)


def pixels_to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """(1, 3, N, H, W) in [-1, 1] -> (N, H, W, 3) uint8, as diffusers' postprocess (denormalise, ×255, round)."""
    x = (pixels[0] * 0.5 + 0.5).clamp(0, 1)  # (3, N, H, W), in the decoder's dtype
    x = x.permute(1, 2, 3, 0).float().cpu().numpy()  # (N, H, W, 3)
    return (x * 255).round().astype(np.uint8)


@torch.no_grad()
def decode(models: DecoderModels, req: DecodeRequest) -> DecodeResult:
    if models.video_vae is None or models.audio_vae is None:
        raise ValueError("decode: models.video_vae and models.audio_vae must be loaded")
    vae, dac = models.video_vae, models.audio_vae
    v, a = req.video_latents, req.audio_latents
    if v.ndim != 5 or v.shape[0] != 1 or v.shape[1] != vae.z_dim:
        raise ValueError(f"video_latents must be (1, {vae.z_dim}, T, H/8, W/8), got {tuple(v.shape)}")
    if a.ndim != 3 or a.shape[0] != 1 or a.shape[1] != dac.latent_dim:
        raise ValueError(f"audio_latents must be (1, {dac.latent_dim}, L), got {tuple(a.shape)}")
    if req.fps <= 0:
        raise ValueError(f"fps must be > 0, got {req.fps}")

    # --- video: de-normalise + decode (bf16 autocast on CUDA, as official) ---
    vae_device = next(vae.parameters()).device
    on_cuda = vae_device.type == "cuda"
    with torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else nullcontext():
        pixels = vae.decode(v.to(device=vae_device, dtype=torch.float32))  # (1, 3, N, H, W) in [-1, 1]
    # Under the bf16 autocast the decoder's output is bf16 (VideoVAE returns it as exact float32 values); the
    # official post-processing maps it to [0, 1] in that dtype, so do the same before rounding to uint8.
    frames = pixels_to_uint8(pixels.to(torch.bfloat16) if on_cuda else pixels)

    # --- audio: DAC decode in float32 (official: a float32 autocast region on CUDA) ---
    dac_param = next(dac.parameters())
    dac_on_cuda = dac_param.device.type == "cuda"
    if not dac_on_cuda and dac_param.dtype != torch.float32:
        raise ValueError(f"decode: load the audio VAE in float32 on CPU (it is {dac_param.dtype})")
    with torch.autocast("cuda", dtype=torch.float32) if dac_on_cuda else nullcontext():
        wav = dac.decode(a.to(device=dac_param.device, dtype=torch.float32))  # (1, 1, hop·L_a)
    audio = wav[0, 0].float().cpu().numpy()
    return DecodeResult(frames=frames, audio=audio, sample_rate=int(dac.sample_rate), fps=float(req.fps))
