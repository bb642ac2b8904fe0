"""Video latent normalisation against the official pipeline's formulas (MOVA pipeline_mova.py
normalize_video_latents / denormalize_video_latents): normalise = (z - mean) * (1 / std) with the reciprocal
taken in the latent dtype; denormalise = z * std + mean."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def vae_and_stats():
    from movakit.loading import MovaCheckpoint
    from movakit.loading.demo import default_demo_checkpoint

    root = default_demo_checkpoint()
    cfg = json.loads((root / "video_vae" / "config.json").read_text())
    vae = MovaCheckpoint(root).load(("video_vae",), dtype=torch.float32).video_vae
    z_dim = cfg["z_dim"]
    mean = torch.tensor(cfg["latents_mean"], dtype=torch.float32).view(1, z_dim, 1, 1, 1)
    std = torch.tensor(cfg["latents_std"], dtype=torch.float32).view(1, z_dim, 1, 1, 1)
    return vae, mean, std, z_dim


def test_denormalize_is_bit_exact(vae_and_stats):
    vae, mean, std, z_dim = vae_and_stats
    z = torch.randn(1, z_dim, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(vae.denormalize(z), z * std + mean)


def test_normalize_is_bit_exact(vae_and_stats):
    vae, mean, std, z_dim = vae_and_stats
    z = torch.randn(1, z_dim, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(vae.normalize(z), (z - mean) * (1.0 / std))


def test_normalize_within_float32_rounding(vae_and_stats):
    vae, mean, std, z_dim = vae_and_stats
    z = torch.randn(1, z_dim, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(vae.normalize(z), (z - mean) * (1.0 / std), rtol=3e-7, atol=0)
