"""A local diffusers text-to-image folder draws the first frame of text-only jobs: a tiny random-weight Stable
Diffusion pipeline built offline (movakit.testing.tiny_text_to_image), loaded from local files only."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from movakit.enhance.first_frame import draw_first_frame_or_none, generate_first_frame
from movakit.enhance.settings import EnhancerSettings, FirstFrameSettings
from movakit.testing.tiny_text_to_image import write_tiny_text_to_image

CAPTION = "A red fox runs across a snowy field.\n\nThe audio is wind and soft footsteps."


@pytest.fixture(scope="module")
def tiny_t2i(tmp_path_factory):
    return write_tiny_text_to_image(tmp_path_factory.mktemp("tiny-t2i"))


def _settings(path) -> EnhancerSettings:
    return EnhancerSettings(first_frame=FirstFrameSettings(model_path=str(path), steps=2))


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_a_seeded_frame_of_the_captions_opening_paragraph(tiny_t2i):
    settings = _settings(tiny_t2i)
    frame = generate_first_frame(settings, CAPTION, 32, 48, seed=3)
    pixels = _pixels(frame)
    assert Image.open(io.BytesIO(frame)).format == "PNG" and pixels.shape == (32, 48, 3)
    assert pixels.std() > 5  # a drawn picture (noise from random weights), not a flat white frame
    assert generate_first_frame(settings, CAPTION, 32, 48, seed=3) == frame  # same seed, same frame
    assert generate_first_frame(settings, CAPTION, 32, 48, seed=4) != frame
    # only the opening paragraph is drawn: another audio paragraph gives the same frame
    other_audio = CAPTION.replace("wind and soft footsteps", "a distant train")
    assert generate_first_frame(settings, other_audio, 32, 48, seed=3) == frame
    assert generate_first_frame(settings, "A blue boat.\n\nThe audio is waves.", 32, 48, seed=3) != frame


def test_a_folder_that_is_no_pipeline_keeps_the_white_frame_and_says_why(tmp_path):
    notes: list[str] = []
    assert draw_first_frame_or_none(_settings(tmp_path), CAPTION, 32, 48, notes) is None
    assert len(notes) == 1 and f"local text-to-image model {tmp_path}" in notes[0]
    assert "using the default first frame" in notes[0]


def test_settings_choose_one_source():
    env = {"MOVA_FIRST_FRAME_MODEL_PATH": "/models/sdxl", "MOVA_FIRST_FRAME_DEVICE": "cuda",
           "MOVA_FIRST_FRAME_STEPS": "8"}
    ff = EnhancerSettings.from_env(env).first_frame
    assert ff.configured and (ff.model_path, ff.device, ff.steps) == ("/models/sdxl", "cuda", 8)
    assert ff.describe_source() == "the local text-to-image model /models/sdxl"
    with pytest.raises(ValueError, match="set one of them"):
        EnhancerSettings.from_env({**env, "MOVA_FIRST_FRAME_BASE_URL": "http://127.0.0.1:9/v1"})
    with pytest.raises(ValueError, match="MOVA_FIRST_FRAME_STEPS"):
        EnhancerSettings.from_env({**env, "MOVA_FIRST_FRAME_STEPS": "-1"})
