"""Shared fixtures of the training tests: a small demo dataset and the tiny checkpoint's models, once per module."""

from __future__ import annotations

import pytest

from movakit.training.demo_data import write_demo_dataset


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("dataset"), clips=2, seconds=1.0)


@pytest.fixture(scope="module")
def tiny_models():
    from movakit.loading import MovaCheckpoint
    from movakit.loading.demo import default_demo_checkpoint

    checkpoint = MovaCheckpoint(str(default_demo_checkpoint()))
    return checkpoint.load(("text_encoder", "video_vae", "audio_vae", "video_dit", "video_dit_2", "audio_dit",
                            "bridge", "scheduler"))
