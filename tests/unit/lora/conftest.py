"""The tiny demo checkpoint (official layout, random weights) and its DiT/bridge components, shared by the LoRA
tests."""

from __future__ import annotations

import pytest
import torch

from movakit.loading import MovaCheckpoint
from movakit.loading.demo import default_demo_checkpoint
from movakit.lora.base_model import meta_components
from movakit.stages.denoise import DenoiseRequest

DENOISER = ("video_dit", "video_dit_2", "audio_dit", "bridge", "scheduler")


@pytest.fixture(scope="session")
def tiny_checkpoint() -> MovaCheckpoint:
    return MovaCheckpoint(default_demo_checkpoint())


@pytest.fixture(scope="session")
def meta(tiny_checkpoint):
    return meta_components(tiny_checkpoint)


@pytest.fixture()
def fresh_models(tiny_checkpoint):
    """A new float32 copy of the denoiser's models (merging changes weights in place)."""
    return lambda: tiny_checkpoint.load(DENOISER, dtype=torch.float32)


def small_request(**kw) -> DenoiseRequest:
    g = torch.Generator().manual_seed(3)
    base = dict(context=torch.randn(1, 16, 32, generator=g), negative_context=torch.randn(1, 16, 32, generator=g),
                y=torch.randn(1, 20, 2, 4, 6, generator=g), height=32, width=48, num_frames=5, fps=24.0,
                num_inference_steps=3, guidance_scale=5.0, seed=11, audio_latent_length=9)
    base.update(kw)
    return DenoiseRequest(**base)
