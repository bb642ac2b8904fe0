"""VideoVAE wrapper over diffusers AutoencoderKLWan: normalisation, posterior mode, clamp, shapes, release keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from movakit.models.video_vae import VideoVAE
from movakit.testing.keys import key_listing, release_module_on_meta
from movakit.loading.release_configs import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD
from movakit.loading.components import load_video_vae
from movakit.loading.demo import write_tiny_checkpoint

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "keys" / "video_vae.txt"


@pytest.fixture(scope="module")
def vae(tmp_path_factory) -> VideoVAE:
    ck = write_tiny_checkpoint(tmp_path_factory.mktemp("vvae") / "tiny")
    return load_video_vae(ck / "video_vae")


def _pixels(frames=5, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, h, w, generator=g) * 2 - 1


def test_scales_and_latent_shape(vae):
    assert (vae.spatial_scale, vae.temporal_scale, vae.z_dim) == (8, 4, 16)
    assert vae.latent_shape(193, 352, 640) == (16, 49, 44, 80)
    with pytest.raises(ValueError, match="num_frames"):
        vae.latent_shape(4, 32, 32)
    with pytest.raises(ValueError, match="height/width"):
        vae.latent_shape(5, 30, 32)


def test_normalisation_uses_the_release_statistics(vae):
    assert torch.allclose(vae.latents_mean.flatten(), torch.tensor(WAN21_LATENTS_MEAN))
    assert torch.allclose(vae.latents_std.flatten(), torch.tensor(WAN21_LATENTS_STD))
    z = torch.randn(1, 16, 2, 3, 3)
    assert torch.allclose(vae.denormalize(vae.normalize(z)), z, atol=1e-6)
    assert torch.allclose(vae.normalize(z)[:, 7], (z[:, 7] - 1.5508) / 2.0743)


def test_encode_is_the_normalised_posterior_mode(vae):
    pixels = _pixels()
    with torch.no_grad():
        latent = vae.encode(pixels)
        mode = vae.vae.encode(pixels).latent_dist.mode()
    assert latent.shape == (1, 16, 2, 4, 4) and latent.dtype == torch.float32
    assert torch.allclose(latent, (mode - vae.latents_mean) / vae.latents_std, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(vae.encode(pixels), latent)  # mode, not a sample


def test_decode_denormalises_and_clamps(vae):
    z_norm = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(1)) * 5
    with torch.no_grad():
        pixels = vae.decode(z_norm)
        raw = vae.vae.decode(vae.denormalize(z_norm)).sample
    assert pixels.shape == (1, 3, 5, 32, 32) and pixels.dtype == torch.float32
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0
    assert torch.allclose(pixels, raw.clamp(-1, 1), atol=1e-6)


def test_bad_shapes_are_refused(vae):
    with pytest.raises(ValueError, match="encode pixels"):
        vae.encode(torch.zeros(1, 4, 5, 32, 32))
    with pytest.raises(ValueError, match="num_frames"):
        vae.encode(torch.zeros(1, 3, 6, 32, 32))
    with pytest.raises(ValueError, match="decode z"):
        vae.decode(torch.zeros(1, 8, 2, 4, 4))


def test_release_key_listing_matches_fixture():
    module = release_module_on_meta("video_vae")
    lines = FIXTURE.read_text().splitlines()
    assert key_listing(module) == lines
    shapes = dict(line.split("\t") for line in lines)
    assert shapes["quant_conv.weight"] == "[32, 32, 1, 1, 1]"  # 2 * z_dim
    assert shapes["post_quant_conv.weight"] == "[16, 16, 1, 1, 1]"
    total = sum(torch.Size(json.loads(s)).numel() for s in shapes.values())
    assert 120e6 < total < 135e6  # docs/model.md#components: about 0.13 B
