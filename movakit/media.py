"""Media: first-frame crop and resize, and the files of a generated clip: the MP4 (H.264 + AAC 48 kHz), the WAV and the preview PNG of a generated clip, and probing.

As in the official save path (docs/sampler.md#steps, step 8): audio -> 16-bit PCM WAV (clip to [-1, 1], ×32767,
truncated to int16); video frames -> H.264 yuv420p; mux with AAC 192 kb/s at 48 kHz, `+faststart`, `-shortest` (the output
is trimmed to the shorter stream). Uses the `ffmpeg`/`ffprobe` programs on PATH through ffmpeg-python.
"""

from __future__ import annotations

import shutil
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import ffmpeg
import numpy as np
from PIL import Image

AAC_BITRATE = "192k"
OUTPUT_SAMPLE_RATE = 48_000


# Filter of the final resize to (width, height): the official script's crop_and_resize calls PIL's resize with
# its default filter for RGB images, bicubic (diffusers' VideoProcessor then sees the exact size: no second pass).
RESAMPLE = Image.Resampling.BICUBIC


def crop_and_resize(image: Image.Image, height: int, width: int) -> Image.Image:
    """Centre-crop to the aspect ratio width:height, then resize to exactly (width, height); RGB.

    Crop geometry as the official script: the kept side is whole, the cropped side's length is truncated
    (int(...)) and its offset floor-halved; then one bicubic resize.
    """
    image = image.convert("RGB")
    w, h = image.size
    if h / w < height / width:  # too wide: keep every row, crop columns
        crop_w = int(h / height * width)
        left = (w - crop_w) // 2
        image = image.crop((left, 0, left + crop_w, h))
    else:  # too tall or the same aspect: keep every column, crop rows
        crop_h = int(w / width * height)
        top = (h - crop_h) // 2
        image = image.crop((0, top, w, top + crop_h))
    return image.resize((width, height), RESAMPLE)


class ClipLike(Protocol):
    """What write_outputs needs (movakit.stages.decode.DecodeResult has these fields)."""

    frames: np.ndarray  # (N, H, W, 3) uint8
    audio: np.ndarray  # (samples,) float32 in [-1, 1]
    sample_rate: int
    fps: float


@dataclass(frozen=True)
class MediaInfo:
    """The facts of an MP4 that tests and users check (from ffprobe)."""

    duration_s: float
    video_codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float
    num_frames: int
    audio_codec: str | None
    sample_rate: int | None
    audio_channels: int | None


class MediaError(RuntimeError):
    """ffmpeg/ffprobe is missing or failed; the message carries its stderr."""


def _failed(what: str, exc: ffmpeg.Error) -> MediaError:
    """MediaError for a failed ffmpeg/ffprobe run: `what`, then the tail of its stderr."""
    return MediaError(f"{what}: {exc.stderr.decode(errors='replace')[-2000:]}")


def _require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise MediaError(f"{program} not found on PATH (install it: apt-get install -y ffmpeg)")
    return path


def write_wav(audio: np.ndarray, sample_rate: int, path: str | Path) -> Path:
    """Mono 16-bit PCM WAV: clip to [-1, 1], ×32767, cast to int16 (truncation, as the official code)."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"write_wav: audio must be 1-D (samples,), got shape {audio.shape}")
    pcm = (np.clip(audio.astype(np.float32), -1.0, 1.0) * 32767).astype(np.int16)
    path = Path(path)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(int(sample_rate))
        f.writeframes(pcm.tobytes())
    return path


def write_outputs(result: ClipLike, mp4_path: str | Path) -> tuple[Path, Path, Path]:
    """Write `<stem>.mp4`, `<stem>.wav` and `<stem>.png` (first frame) side by side; returns the three paths."""
    frames = np.asarray(result.frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"write_outputs: frames must be uint8 (N,H,W,3), got {frames.dtype} {frames.shape}")
    n, h, w, _ = frames.shape
    if n < 1 or h % 2 or w % 2:
        raise ValueError(f"write_outputs: need >= 1 frame and even H, W for yuv420p, got {frames.shape}")
    if result.fps <= 0:
        raise ValueError(f"write_outputs: fps must be > 0, got {result.fps}")
    mp4 = Path(mp4_path)
    if mp4.suffix.lower() != ".mp4":
        raise ValueError(f"write_outputs: output path must end in .mp4, got {mp4}")
    mp4.parent.mkdir(parents=True, exist_ok=True)
    wav = write_wav(result.audio, result.sample_rate, mp4.with_suffix(".wav"))
    png = mp4.with_suffix(".png")
    Image.fromarray(frames[0]).save(png)

    rate = Fraction(result.fps).limit_denominator(1001)
    video_in = ffmpeg.input("pipe:0", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=str(rate))
    audio_in = ffmpeg.input(str(wav))
    out = ffmpeg.output(
        video_in.video,
        audio_in.audio,
        str(mp4),
        vcodec="libx264",
        pix_fmt="yuv420p",
        crf=18,
        acodec="aac",
        audio_bitrate=AAC_BITRATE,
        ar=OUTPUT_SAMPLE_RATE,
        movflags="+faststart",
        shortest=None,
    ).overwrite_output()
    try:
        out.run(cmd=_require("ffmpeg"), input=np.ascontiguousarray(frames).tobytes(), quiet=True)
    except ffmpeg.Error as exc:
        raise _failed(f"ffmpeg failed writing {mp4}", exc) from exc
    return mp4, wav, png


def probe(path: str | Path) -> MediaInfo:
    """ffprobe an MP4: codecs, size, fps, frame count, duration and the audio stream's rate/channels."""
    try:
        info = ffmpeg.probe(str(path), cmd=_require("ffprobe"), count_frames=None)
    except ffmpeg.Error as exc:
        raise _failed(f"ffprobe failed on {path}", exc) from exc
    streams = info["streams"]
    video = [s for s in streams if s["codec_type"] == "video"]
    audio = [s for s in streams if s["codec_type"] == "audio"]
    if not video:
        raise MediaError(f"{path}: no video stream")
    v = video[0]
    a = audio[0] if audio else None
    return MediaInfo(
        duration_s=float(info["format"]["duration"]),
        video_codec=v["codec_name"],
        pix_fmt=v["pix_fmt"],
        width=int(v["width"]),
        height=int(v["height"]),
        fps=float(Fraction(v["r_frame_rate"])),
        num_frames=int(v.get("nb_read_frames") or v["nb_frames"]),
        audio_codec=a["codec_name"] if a else None,
        sample_rate=int(a["sample_rate"]) if a else None,
        audio_channels=int(a["channels"]) if a else None,
    )


def read_video_frames(path: str | Path) -> np.ndarray:
    """Decode every video frame of a file to uint8 RGB (N, H, W, 3)."""
    info = probe(path)
    try:
        raw, _ = (
            ffmpeg.input(str(path))
            .output("pipe:", format="rawvideo", pix_fmt="rgb24")
            .run(cmd=_require("ffmpeg"), capture_stdout=True, quiet=True)
        )
    except ffmpeg.Error as exc:
        raise _failed(f"ffmpeg failed decoding {path}", exc) from exc
    return np.frombuffer(raw, np.uint8).reshape(-1, info.height, info.width, 3)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream to mono float32 at its own sample rate: (samples,), sample_rate."""
    try:
        streams = ffmpeg.probe(str(path), cmd=_require("ffprobe"))["streams"]
    except ffmpeg.Error as exc:
        raise _failed(f"ffprobe failed on {path}", exc) from exc
    audio = [s for s in streams if s["codec_type"] == "audio"]
    if not audio:
        raise MediaError(f"{path}: no audio stream")
    sample_rate = int(audio[0]["sample_rate"])
    try:
        raw, _ = (
            ffmpeg.input(str(path))
            .output("pipe:", format="f32le", ac=1, ar=sample_rate)
            .run(cmd=_require("ffmpeg"), capture_stdout=True, quiet=True)
        )
    except ffmpeg.Error as exc:
        raise _failed(f"ffmpeg failed decoding audio of {path}", exc) from exc
    return np.frombuffer(raw, np.float32), sample_rate
