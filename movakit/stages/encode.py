"""Encode stage: prompt + negative prompt -> text contexts; first frame -> image conditioning `y`
(docs/model.md#text-encoder, docs/model.md#first-frame-conditioning).

  1. the reference image (or, with none, the replaceable first-frame source of stages/first_frame.py) is
     centre-cropped to the target aspect ratio, resized to (width, height) (bicubic; the official script's
     crop_and_resize, movakit/media.py) and mapped to [-1, 1];
  2. an N-frame clip (frame 0 = the image, frames 1..N-1 = zeros) goes through the video VAE (posterior mode,
     normalised with latents_mean/std) -> (1, z_dim, T_lat, H/8, W/8);
  3. the mask: 4 channels, ones at latent frame 0, zeros elsewhere, built as the official code does (per pixel
     frame, first frame repeated `temporal_scale` times, folded by the temporal stride);
  4. y = cat(mask, latent) -> (1, 4 + z_dim, T_lat, H/8, W/8), float32;
  5. prompt and negative prompt through the text encoder, each on its own (batch 1, as the official pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from movakit.media import crop_and_resize
from movakit.request import GenerationRequest
from movakit.stages.first_frame import FirstFrameSource, first_frame_for

class EncoderModels(Protocol):
    """What this stage reads from the loaded checkpoint (movakit.loading.MovaModels has these fields)."""

    text_encoder: object | None  # movakit.models.text_encoder.TextEncoder
    video_vae: object | None  # movakit.models.video_vae.VideoVAE


@dataclass(frozen=True)
class EncodeRequest:
    prompt: str
    negative_prompt: str
    image: Image.Image | None  # None: stages.first_frame supplies the first frame
    height: int
    width: int
    num_frames: int


@dataclass(frozen=True)
class EncodeResult:
    context: torch.Tensor  # (1, 512, text_dim)
    negative_context: torch.Tensor  # (1, 512, text_dim)
    y: torch.Tensor  # (1, 4 + z_dim, T_lat, H/8, W/8) float32: mask then image latent


def encode_request(req: GenerationRequest, prompt: str, image: Image.Image | None) -> EncodeRequest:
    """The encode stage's request for a resolved generation request (the embedded pipeline and the encoder service
    both build it here): `prompt` is the one the text encoder sees (the enhancer's or the user's own), `image` the
    first frame (None: the first-frame source of `encode` supplies it)."""
    req.require_resolved()
    return EncodeRequest(prompt=prompt, negative_prompt=req.negative_prompt, image=image, height=req.height,
                         width=req.width, num_frames=req.num_frames)


def validate_geometry(height: int, width: int, num_frames: int, *, spatial_scale: int = 8, temporal_scale: int = 4) -> None:
    """docs/sampler.md#steps, step 1: H, W multiples of 2·spatial_scale (16), num_frames ≡ 1 mod temporal_scale
    (4)."""
    div = 2 * spatial_scale
    if height <= 0 or height % div:
        raise ValueError(f"height must be a positive multiple of {div}, got {height}")
    if width <= 0 or width % div:
        raise ValueError(f"width must be a positive multiple of {div}, got {width}")
    if num_frames < 1 or num_frames % temporal_scale != 1:
        raise ValueError(f"num_frames must be {temporal_scale}k+1 (e.g. 17, 97, 193), got {num_frames}")


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB uint8 image -> (1, 3, H, W) float32 in [-1, 1] (x/255·2 − 1, as diffusers' VideoProcessor)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0) * 2.0 - 1.0


def first_frame_mask(num_frames: int, latent_height: int, latent_width: int, temporal_scale: int) -> torch.Tensor:
    """(1, temporal_scale, T_lat, h, w) float32: ones at latent frame 0, zeros elsewhere."""
    mask = torch.ones(1, 1, num_frames, latent_height, latent_width)
    mask[:, :, 1:] = 0  # per pixel frame: only frame 0 is given
    first = torch.repeat_interleave(mask[:, :, 0:1], repeats=temporal_scale, dim=2)
    mask = torch.cat([first, mask[:, :, 1:]], dim=2)  # (1, 1, N - 1 + temporal_scale, h, w)
    mask = mask.view(1, -1, temporal_scale, latent_height, latent_width)  # (1, T_lat, temporal_scale, h, w)
    return mask.transpose(1, 2)  # (1, temporal_scale, T_lat, h, w)


def image_condition(vae, pixels: torch.Tensor, num_frames: int) -> torch.Tensor:
    """y = cat(mask, latent) (1, 4 + z_dim, T_lat, H/8, W/8) float32 from a (1, 3, H, W) first frame in [-1, 1]:
    the frame followed by num_frames - 1 zero frames through the video VAE, then the first-frame mask (steps 2-4 of
    the module docstring; the fine-tuning step builds its y the same way)."""
    height, width = pixels.shape[-2:]
    clip = torch.cat([pixels.unsqueeze(2), pixels.new_zeros(1, 3, num_frames - 1, height, width)], dim=2)
    vae_device = next(vae.parameters()).device
    latent = vae.encode(clip.to(vae_device)).float()  # (1, z_dim, T_lat, H/8, W/8), normalised
    t_lat, h_lat, w_lat = latent.shape[2:]
    mask = first_frame_mask(num_frames, h_lat, w_lat, vae.temporal_scale).to(latent.device)
    if mask.shape[2] != t_lat:
        raise ValueError(f"video VAE gave {t_lat} latent frames for {num_frames} frames; expected {mask.shape[2]}")
    return torch.cat([mask, latent], dim=1)


@torch.no_grad()
def encode(models: EncoderModels, req: EncodeRequest, *, first_frame: FirstFrameSource = first_frame_for) -> EncodeResult:
    """Text contexts for prompt and negative prompt, and `y` from the first frame (see module docstring)."""
    if models.text_encoder is None or models.video_vae is None:
        raise ValueError("encode: models.text_encoder and models.video_vae must be loaded")
    vae = models.video_vae
    validate_geometry(
        req.height, req.width, req.num_frames, spatial_scale=vae.spatial_scale, temporal_scale=vae.temporal_scale
    )
    if not req.prompt.strip():
        raise ValueError("prompt must not be empty")

    # --- 1. the first frame ---
    image = req.image if req.image is not None else first_frame(req.prompt, req.height, req.width)
    pixels = image_to_tensor(crop_and_resize(image, req.height, req.width))  # (1, 3, H, W)

    # --- 2.-4. the zero-padded N-frame clip through the video VAE, mask and y ---
    y = image_condition(vae, pixels, req.num_frames)

    # --- 5. text ---
    context = models.text_encoder.encode([req.prompt])
    negative_context = models.text_encoder.encode([req.negative_prompt])
    return EncodeResult(context=context, negative_context=negative_context, y=y)
