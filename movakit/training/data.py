"""The fine-tuning dataset: the official layout, checked up front, each clip preprocessed as the official trainer does.

Layout (docs/training.md, "Data"): `<root>/metadata.json` is a JSON list of `{"video_path": <path relative to
root>, "caption": <str, default "">}`; the sound is the video file's own audio stream.

Preprocessing of one clip, as the official dataset class does it:
  1. frames 0..num_frames-1 (the source frame rate is not resampled);
  2. centre crop to the target aspect ratio (the kept side whole, the other `round(...)`; the offset rounded half
     to even, as torchvision's center_crop), then a bilinear, antialiased resize to (height, width) on uint8;
  3. x / 255 · 2 − 1 -> float32 in [-1, 1], laid out (3, T, H, W);
  4. audio decoded to mono at `sample_rate` over [0, num_frames / fps), silence in front when the stream starts
     late, cut or right-padded with zeros to int(sample_rate · num_frames / fps) samples.
Unlike the official code, `validate_dataset` refuses a clip that is shorter than num_frames, has no audio, or
cannot be decoded, naming it, before any training starts (the official trainer trains on short clips with fewer
latent frames than the audio, and fails mid-run on unreadable ones).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np
import torch
import torch.nn.functional as F

from movakit.media import MediaError, probe

METADATA_FILE = "metadata.json"


class DatasetError(ValueError):
    """The dataset cannot be used; the message names the clip (its video_path) or metadata.json."""


@dataclass(frozen=True)
class ClipGeometry:
    """What every training clip is cut to: the model's training resolution and clip length."""

    num_frames: int
    height: int
    width: int
    fps: float
    sample_rate: int

    @property
    def num_samples(self) -> int:
        return int(self.sample_rate * self.num_frames / self.fps)


@dataclass(frozen=True)
class ClipEntry:
    video_path: str  # as written in metadata.json (relative to the dataset root)
    caption: str
    path: Path  # resolved file


@dataclass(frozen=True)
class TrainingClip:
    video: torch.Tensor  # (3, T, H, W) float32 in [-1, 1]
    audio: torch.Tensor  # (1, samples) float32
    caption: str


def read_metadata(root: str | Path) -> list[ClipEntry]:
    """The entries of `<root>/metadata.json`; DatasetError for a missing or malformed file or entry."""
    root = Path(root)
    meta = root / METADATA_FILE
    try:
        items = json.loads(meta.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{meta}: not found (the dataset root must hold {METADATA_FILE})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{meta}: not readable JSON ({exc})") from None
    if not isinstance(items, list) or not items:
        raise DatasetError(f"{meta}: expected a non-empty JSON list of {{video_path, caption}}")
    entries = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("video_path"), str) or not item["video_path"]:
            raise DatasetError(f"{meta}: entry {i} needs a non-empty string video_path")
        caption = item.get("caption", "")
        if not isinstance(caption, str):
            raise DatasetError(f"{meta}: entry {i} ({item['video_path']}): caption must be a string")
        path = (root / item["video_path"]).resolve()
        if root.resolve() not in path.parents:
            raise DatasetError(f"{item['video_path']}: video_path must stay inside the dataset root")
        entries.append(ClipEntry(item["video_path"], caption, path))
    return entries


def validate_dataset(root: str | Path, geometry: ClipGeometry) -> list[ClipEntry]:
    """Every clip readable, with an audio stream, at least num_frames frames and num_frames/fps seconds long.

    Raises DatasetError naming the first bad clip; returns the entries otherwise.
    """
    entries = read_metadata(root)
    need_s = geometry.num_frames / geometry.fps
    for entry in entries:
        if not entry.path.is_file():
            raise DatasetError(f"{entry.video_path}: no such file")
        try:
            info = probe(entry.path)
        except MediaError as exc:
            raise DatasetError(f"{entry.video_path}: not a readable video ({exc})") from None
        if info.audio_codec is None:
            raise DatasetError(f"{entry.video_path}: has no audio stream (training needs the clip's sound)")
        if info.num_frames < geometry.num_frames:
            raise DatasetError(f"{entry.video_path}: {info.num_frames} frames; at least {geometry.num_frames} needed")
        if info.duration_s + 1e-3 < need_s:
            raise DatasetError(f"{entry.video_path}: {info.duration_s:.3f} s long; at least {need_s:.3f} s needed")
    return entries


def crop_resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(T, 3, h, w) uint8 -> (T, 3, height, width) uint8: centre crop to the aspect ratio, bilinear resize.

    The kept side stays whole, the cropped one is round(other side · ratio); the crop offset is
    round((size − crop) / 2) (Python's round, half to even); the resize is bilinear with antialiasing on the
    uint8 frames (torchvision's tensor resize with its defaults, which the official dataset calls).
    """
    in_h, in_w = frames.shape[-2:]
    ratio = width / height
    if in_w / in_h > ratio:
        crop_h, crop_w = in_h, max(1, round(in_h * ratio))
    else:
        crop_h, crop_w = max(1, round(in_w / ratio)), in_w
    top, left = round((in_h - crop_h) / 2.0), round((in_w - crop_w) / 2.0)
    frames = frames[..., top:top + crop_h, left:left + crop_w]
    return F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def _decode_frames(path: Path, count: int) -> np.ndarray:
    info = probe(path)
    try:
        raw, _ = (ffmpeg.input(str(path)).output("pipe:", format="rawvideo", pix_fmt="rgb24", vframes=count)
                  .run(capture_stdout=True, quiet=True))
    except ffmpeg.Error as exc:
        raise DatasetError(f"{path.name}: ffmpeg could not decode the frames") from exc
    frames = np.frombuffer(raw, np.uint8).reshape(-1, info.height, info.width, 3)
    return frames[:count]


def _decode_audio(path: Path, geometry: ClipGeometry) -> np.ndarray:
    # aresample's first_pts=0 inserts silence for a stream that starts after 0, as the official left padding.
    try:
        raw, _ = (ffmpeg.input(str(path)).audio
                  .filter("aresample", geometry.sample_rate, first_pts=0)
                  .output("pipe:", format="f32le", ac=1, ar=geometry.sample_rate, t=geometry.num_frames / geometry.fps)
                  .run(capture_stdout=True, quiet=True))
    except ffmpeg.Error as exc:
        raise DatasetError(f"{path.name}: ffmpeg could not decode the audio") from exc
    return np.frombuffer(raw, np.float32)


def load_clip(entry: ClipEntry, geometry: ClipGeometry) -> TrainingClip:
    """The preprocessed clip (see the module docstring)."""
    frames = torch.from_numpy(_decode_frames(entry.path, geometry.num_frames).copy()).permute(0, 3, 1, 2)
    if frames.shape[0] < geometry.num_frames:
        raise DatasetError(f"{entry.video_path}: decoded {frames.shape[0]} frames; {geometry.num_frames} needed")
    frames = crop_resize_frames(frames, geometry.height, geometry.width)  # (T, 3, H, W) uint8
    video = (frames.float() / 255.0 * 2 - 1).permute(1, 0, 2, 3).contiguous()  # (3, T, H, W)
    wav = torch.from_numpy(_decode_audio(entry.path, geometry).copy())[: geometry.num_samples]
    wav = F.pad(wav, (0, geometry.num_samples - wav.shape[0]))
    return TrainingClip(video=video, audio=wav.unsqueeze(0), caption=entry.caption)
