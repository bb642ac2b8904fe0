"""H3's first-frame preprocessing (movakit/media.py, stages/encode.py) against the official script's crop_and_resize
(mova/datasets/transforms/custom.py) + diffusers VideoProcessor.preprocess. See tests/reference/NOTES.md."""

from __future__ import annotations

import first_frame_reference as ffr
import numpy as np
import torch
from PIL import Image

from movakit.media import crop_and_resize
from movakit.stages.encode import image_to_tensor


def _image(h: int, w: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    # smooth-ish content so filters differ measurably but not wildly
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(x / 7.0) + np.cos(y / 5.0), np.sin((x + y) / 9.0), np.cos(x / 3.0) * np.sin(y / 4.0)], -1)
    noise = rng.normal(0, 0.2, (h, w, 3))
    return Image.fromarray(np.clip((base + noise + 2) * 60, 0, 255).astype(np.uint8))


def test_reference_preprocessing_equals_diffusers_video_processor_on_the_cropped_image():
    from diffusers.video_processor import VideoProcessor

    img = ffr.crop_and_resize(_image(300, 500), 64, 96)
    got = VideoProcessor(vae_scale_factor=8).preprocess(img, height=64, width=96)
    assert torch.equal(got, ffr.to_tensor(img))


def test_image_to_tensor_matches_reference_mapping():
    img = _image(64, 96)
    assert torch.equal(image_to_tensor(img), ffr.to_tensor(img))


def test_crop_geometry_agrees_where_truncation_and_rounding_coincide():
    # 300x500 -> 64x96: crop width 450 either way, so only the resize filter can differ
    assert ffr.crop_box(300, 500, 64, 96) == (0, 25, 300, 450)


def test_resize_filter_matches_official_bicubic():
    img = _image(300, 500)  # crop geometry identical on both sides (previous test)
    got = np.asarray(crop_and_resize(img, 64, 96))
    expect = np.asarray(ffr.crop_and_resize(img, 64, 96))
    assert np.array_equal(got, expect)


def test_crop_geometry_truncates_like_official():
    img = _image(480, 854, seed=1)
    assert ffr.crop_box(480, 854, 352, 640) == (5, 0, 469, 854)
    got = np.asarray(crop_and_resize(img, 352, 640))
    expect = np.asarray(ffr.crop_and_resize(img, 352, 640))
    assert np.array_equal(got, expect)
