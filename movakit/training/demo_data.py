"""A small fine-tuning dataset in the official layout, drawn by ffmpeg: moving test patterns with sine tones.

For trying `mova finetune` without data of one's own (`mova finetune-demo-data DIR`) and for the tests. Each clip
is an H.264 + AAC MP4 whose picture (ffmpeg's testsrc2 pattern) and tone (a sine at its own pitch) differ, with a
caption that says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import ffmpeg

from movakit.training.data import METADATA_FILE


def write_demo_dataset(root: str | Path, *, clips: int = 3, seconds: float = 1.0, width: int = 128,
                       height: int = 96, fps: int = 24) -> Path:
    """Write `clips` MP4s and metadata.json under `root`; returns root."""
    root = Path(root)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(clips):
        pitch = 220 * (i + 2)
        name = f"videos/clip_{i:03d}.mp4"
        video = ffmpeg.input(f"testsrc2=size={width}x{height}:rate={fps}", f="lavfi", t=seconds)
        audio = ffmpeg.input(f"sine=frequency={pitch}:sample_rate=48000", f="lavfi", t=seconds)
        (ffmpeg.output(video.filter("hue", h=90 * i), audio, str(root / name), vcodec="libx264",
                       pix_fmt="yuv420p", acodec="aac", shortest=None)
         .overwrite_output().run(quiet=True))
        items.append({"video_path": name, "caption": f"A test pattern turning, with a steady {pitch} Hz tone."})
    (root / METADATA_FILE).write_text(json.dumps(items, indent=2))
    return root
