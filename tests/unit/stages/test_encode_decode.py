"""Encode (mask / y layout, first frame, text) and decode (lengths, uint8 frames) with tiny real VAEs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan
from PIL import Image

from movakit.media import crop_and_resize
from movakit.models.audio_vae import DacVAE, DacVAEConfig
from movakit.models.video_vae import VideoVAE
from movakit.stages.decode import DecodeRequest, decode, pixels_to_uint8
from movakit.stages.encode import (
    EncodeRequest,
    encode,
    first_frame_mask,
    image_to_tensor,
)
from movakit.stages.first_frame import first_frame_for

H, W, N = 32, 48, 9  # latent (16, 3, 4, 6)


class _FakeText:
    """Stand-in text encoder: a (1, 6, 4) tensor that depends on the prompt."""

    def encode(self, prompts: list[str]) -> torch.Tensor:
        assert len(prompts) == 1
        return torch.full((1, 6, 4), float(len(prompts[0])))


@dataclass
class _Models:
    text_encoder: object | None
    video_vae: VideoVAE | None
    audio_vae: DacVAE | None


@pytest.fixture(scope="module")
def models() -> _Models:
    torch.manual_seed(0)
    wan = AutoencoderKLWan(
        base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    dac = DacVAE(
        DacVAEConfig(
            encoder_dim=4, encoder_rates=(2, 3), latent_dim=8, decoder_dim=16, decoder_rates=(3, 2),
            sample_rate=600, continuous=True, use_weight_norm=False,
        )
    )
    return _Models(text_encoder=_FakeText(), video_vae=VideoVAE(wan).eval(), audio_vae=dac.eval())


def _req(**kw) -> EncodeRequest:
    base = dict(prompt="a cat", negative_prompt="blurry, static", image=None, height=H, width=W, num_frames=N)
    base.update(kw)
    return EncodeRequest(**base)


def test_first_frame_mask_layout():
    m = first_frame_mask(17, 2, 3, temporal_scale=4)
    assert m.shape == (1, 4, 5, 2, 3)
    assert torch.all(m[:, :, 0] == 1) and torch.all(m[:, :, 1:] == 0)


def test_crop_and_resize_keeps_the_centre():
    img = Image.new("RGB", (300, 100), (255, 0, 0))
    img.paste((0, 255, 0), (100, 0, 200, 100))  # green centre third
    out = crop_and_resize(img, 64, 64)
    assert out.size == (64, 64)
    a = np.asarray(out)
    assert (a[:, 8:56, 1] > 250).all() and (a[:, 8:56, 0] < 5).all()
    tall = crop_and_resize(Image.new("RGB", (50, 400), (9, 9, 9)), 32, 48)
    assert tall.size == (48, 32)


def test_image_to_tensor_range():
    t = image_to_tensor(Image.new("RGB", (4, 2), (255, 0, 255)))
    assert t.shape == (1, 3, 2, 4) and t.dtype == torch.float32
    assert torch.all(t[:, 0] == 1) and torch.all(t[:, 1] == -1)


@torch.no_grad()
def test_encode_y_is_mask_then_latent_of_the_zero_padded_clip(models):
    img = Image.new("RGB", (W, H), (200, 30, 90))
    out = encode(models, _req(image=img))
    assert out.y.shape == (1, 20, 3, H // 8, W // 8) and out.y.dtype == torch.float32
    assert torch.all(out.y[:, :4, 0] == 1) and torch.all(out.y[:, :4, 1:] == 0)
    pixels = image_to_tensor(img)
    clip = torch.cat([pixels.unsqueeze(2), torch.zeros(1, 3, N - 1, H, W)], dim=2)
    torch.testing.assert_close(out.y[:, 4:], models.video_vae.encode(clip))
    # latent frames of the all-zero pixel frames are not zero after normalisation
    # (docs/model.md#first-frame-conditioning)
    assert out.y[:, 4:, 1:].abs().sum() > 0
    assert float(out.context.flatten()[0]) == len("a cat")
    assert float(out.negative_context.flatten()[0]) == len("blurry, static")


@torch.no_grad()
def test_text_only_uses_the_white_first_frame_and_the_source_is_replaceable(models):
    white = encode(models, _req(image=Image.new("RGB", (W, H), (255, 255, 255))))
    none = encode(models, _req(image=None))
    assert torch.equal(white.y, none.y)
    seen = []

    def black(prompt: str, height: int, width: int) -> Image.Image:
        seen.append((prompt, height, width))
        return Image.new("RGB", (width, height), (0, 0, 0))

    other = encode(models, _req(image=None), first_frame=black)
    assert seen == [("a cat", H, W)] and not torch.equal(other.y, none.y)
    assert first_frame_for("x", 16, 32).getpixel((31, 15)) == (255, 255, 255)


@pytest.mark.parametrize(
    "kw,match",
    [(dict(height=40), "height"), (dict(width=20), "width"), (dict(num_frames=8), "num_frames"), (dict(prompt=" "), "prompt")],
)
def test_encode_rejects_bad_requests(models, kw, match):
    with pytest.raises(ValueError, match=match):
        encode(models, _req(**kw))


@torch.no_grad()
def test_decode_lengths_and_types(models):
    g = torch.Generator().manual_seed(1)
    out = decode(models, DecodeRequest(torch.randn(1, 16, 3, 4, 6, generator=g), torch.randn(1, 8, 5, generator=g), 24.0))
    assert out.frames.shape == (N, H, W, 3) and out.frames.dtype == np.uint8
    assert out.audio.shape == (6 * 5,) and out.audio.dtype == np.float32  # hop x latent length
    assert np.abs(out.audio).max() <= 1.0
    assert out.sample_rate == 600 and out.fps == 24.0


def test_pixels_to_uint8_mapping():
    px = torch.tensor([-1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 1, 4).expand(1, 3, 1, 1, 4)
    assert pixels_to_uint8(px)[0, 0, :, 0].tolist() == [0, 128, 255, 255]
    # the affine map runs in the input dtype (bf16 on CUDA, as diffusers' postprocess of a bf16 decode):
    # 0.3 in bf16 -> 0.5 * x + 0.5 rounds to 0.6484 in bf16 (165) but is 0.6499 in float32 (166)
    x = torch.tensor(0.3, dtype=torch.bfloat16).view(1, 1, 1, 1, 1).expand(1, 3, 1, 1, 1)
    assert pixels_to_uint8(x)[0, 0, 0, 0] == 165
    assert pixels_to_uint8(x.float())[0, 0, 0, 0] == 166


def test_decode_rejects_bad_shapes(models):
    with pytest.raises(ValueError, match="video_latents"):
        decode(models, DecodeRequest(torch.zeros(1, 4, 3, 4, 6), torch.zeros(1, 8, 5), 24.0))
    with pytest.raises(ValueError, match="audio_latents"):
        decode(models, DecodeRequest(torch.zeros(1, 16, 3, 4, 6), torch.zeros(1, 7, 5), 24.0))
