"""The fine-tuning dataset: layout checks that name the clip, and the official preprocessing."""

from __future__ import annotations

import json

import ffmpeg
import pytest
import torch

from movakit.training.data import ClipGeometry, DatasetError, crop_resize_frames, load_clip, validate_dataset

GEOMETRY = ClipGeometry(num_frames=17, height=64, width=96, fps=24.0, sample_rate=48_000)


def test_demo_dataset_validates_and_loads_in_range(demo_dataset):
    entries = validate_dataset(demo_dataset, GEOMETRY)
    assert [e.video_path for e in entries] == ["videos/clip_000.mp4", "videos/clip_001.mp4"]
    clip = load_clip(entries[0], GEOMETRY)
    assert clip.video.shape == (3, 17, 64, 96) and clip.video.dtype == torch.float32
    assert -1.0 <= float(clip.video.min()) < 0.0 < float(clip.video.max()) <= 1.0
    assert clip.audio.shape == (1, int(48_000 * 17 / 24))  # 34000 samples, the clip's 17/24 s
    # the demo's first clip is a 440 Hz sine: its spectrum peaks there
    spectrum = torch.fft.rfft(clip.audio[0]).abs()
    assert abs(float(spectrum.argmax()) * 48_000 / clip.audio.shape[1] - 440) < 5
    assert "440 Hz" in clip.caption


def _write_metadata(root, items):
    (root / "metadata.json").write_text(json.dumps(items))


def test_each_bad_clip_is_named(demo_dataset, tmp_path):
    root = tmp_path
    (root / "videos").mkdir()
    silent = root / "videos" / "silent.mp4"
    ffmpeg.input("testsrc2=size=96x64:rate=24", f="lavfi", t=1).output(str(silent), vcodec="libx264",
                                                                           pix_fmt="yuv420p").run(quiet=True)
    _write_metadata(root, [{"video_path": "videos/silent.mp4", "caption": "x"}])
    with pytest.raises(DatasetError, match=r"videos/silent\.mp4: has no audio stream"):
        validate_dataset(root, GEOMETRY)

    short = root / "videos" / "short.mp4"
    (ffmpeg.output(ffmpeg.input("testsrc2=size=96x64:rate=24", f="lavfi", t=0.25),
                   ffmpeg.input("sine=frequency=300", f="lavfi", t=0.25), str(short), vcodec="libx264",
                   pix_fmt="yuv420p", acodec="aac").run(quiet=True))
    _write_metadata(root, [{"video_path": "videos/short.mp4"}])
    with pytest.raises(DatasetError, match=r"videos/short\.mp4: 6 frames; at least 17 needed"):
        validate_dataset(root, GEOMETRY)

    (root / "videos" / "broken.mp4").write_bytes(b"not a video")
    _write_metadata(root, [{"video_path": "videos/broken.mp4"}])
    with pytest.raises(DatasetError, match=r"videos/broken\.mp4: not a readable video"):
        validate_dataset(root, GEOMETRY)

    _write_metadata(root, [{"video_path": "../outside.mp4"}])
    with pytest.raises(DatasetError, match="must stay inside the dataset root"):
        validate_dataset(root, GEOMETRY)
    _write_metadata(root, [{"caption": "no path"}])
    with pytest.raises(DatasetError, match="entry 0 needs a non-empty string video_path"):
        validate_dataset(root, GEOMETRY)
    (root / "metadata.json").unlink()
    with pytest.raises(DatasetError, match="metadata.json: not found"):
        validate_dataset(root, GEOMETRY)


def test_crop_keeps_the_centre_and_rounds_like_torchvision():
    # 100 x 300 (wider than 64:96): keep all rows, crop round(100 * 1.5) = 150 columns at round(75.0) = 75
    frames = torch.zeros(1, 3, 100, 300, dtype=torch.uint8)
    frames[..., :, 75:225] = 200  # exactly the columns the crop keeps
    out = crop_resize_frames(frames, 64, 96)
    assert out.shape == (1, 3, 64, 96) and out.dtype == torch.uint8
    assert int(out.min()) == 200 and int(out.max()) == 200
    # taller than the ratio: keep all columns, crop rows round(96 / 1.5) = 64 at round((200 - 64) / 2) = 68
    tall = torch.zeros(1, 3, 200, 96, dtype=torch.uint8)
    tall[..., 68:132, :] = 90
    assert torch.equal(crop_resize_frames(tall, 64, 96), torch.full((1, 3, 64, 96), 90, dtype=torch.uint8))
