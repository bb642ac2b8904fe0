"""Long videos in one process: segments made one after another and joined into one MP4 (docs/long-videos.md).

A request whose `duration_s` is longer than one clip of `num_frames` at `fps` is cut into the segments of
movakit.segments.plan_segments. Segment k is the same request with seed `segment_seed(seed, k)` (seed + k) and, for
k > 0, the decoded last frame of segment k − 1 as its first-frame image (a lossless PNG of those pixels: the encode
stage's crop-and-resize leaves an image of the target size unchanged, so segment k's encoder sees exactly that
frame). Segment 0's prompt is the request's (the enhanced one, when enhancing: the enhancer runs once, for
segment 0); a later segment uses its shot (`shots`, the last one repeating) or else segment 0's prompt. The decoded
segments are joined by movakit.segments (the repeated frame dropped, the sound crossfaded over one frame's
duration). The stack runs the same segments through its stage services with these functions
(docs/stack.md#long-videos).
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image

from movakit.media import write_outputs
from movakit.request import SEED, GenerationRequest
from movakit.segments import SegmentPlan, join_audio, join_frames, overlap_samples, plan_segments

if TYPE_CHECKING:
    from movakit.loading.checkpoint import MovaModels
    from movakit.pipeline import RunOptions
    from movakit.stages.decode import DecodeResult


def segment_plan(req: GenerationRequest) -> SegmentPlan | None:
    """The segments of a resolved request, or None when it asks for one clip (duration_s 0 or within one clip)."""
    if not req.duration_s:
        return None
    plan = plan_segments(req.duration_s, req.fps, req.num_frames)
    return plan if plan.count > 1 else None


def segment_seed(seed: int, k: int) -> int:
    """The seed of segment k: seed + k, wrapped into the seed range."""
    return (seed + k) % (SEED[1] + 1)


def segment_prompt(req: GenerationRequest, k: int, first_prompt: str) -> str:
    """The prompt of segment k: `first_prompt` (the prompt segment 0 was made with) for segment 0 and when the
    request has no shots, else shot k (shots[k - 1]; the last shot for segments beyond the list)."""
    if k == 0 or not req.shots:
        return first_prompt
    return req.shots[min(k, len(req.shots)) - 1]


def segment_request(req: GenerationRequest, k: int, first_prompt: str) -> GenerationRequest:
    """The one-clip request of segment k: its seed, its prompt (segment_prompt), no enhancing, no duration."""
    return dataclasses.replace(req, seed=segment_seed(req.seed, k), prompt=segment_prompt(req, k, first_prompt),
                               enhance_prompt=False, duration_s=0.0, shots=())


def frame_png(frame: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (lossless: the next segment's encoder gets these very pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def join_segments(plan: SegmentPlan, clips: list[DecodeResult]) -> DecodeResult:
    """One clip of the decoded segments: frames by join_frames, sound by join_audio, each segment's sound first
    cut to its frames' duration so that every crossfade lies on its video join."""
    from movakit.stages.decode import DecodeResult

    rate = clips[0].sample_rate
    per_frame = overlap_samples(rate, plan.fps)
    length = plan.clip_frames * per_frame
    short = [c.audio.shape[0] for c in clips if c.audio.shape[0] < length]
    if short:
        raise ValueError(f"join_segments: a segment's sound has {short[0]} samples, fewer than its "
                         f"{plan.clip_frames} frames' {length}")
    return DecodeResult(frames=join_frames([c.frames for c in clips]),
                        audio=join_audio([c.audio[:length] for c in clips], rate, plan.fps),
                        sample_rate=rate, fps=plan.fps)


@dataclass(frozen=True)
class LongResult:
    mp4: Path
    wav: Path
    png: Path
    prompt_used: str
    enhance_backend: str
    enhance_events: tuple[str, ...]
    plan: SegmentPlan
    conditioning: tuple[bytes, ...]  # the first-frame image each segment k > 0 was encoded with (PNG), in order
    segments: tuple[DecodeResult, ...]  # each segment as decoded
    clip: DecodeResult  # the joined video and sound, as written
    denoise_s: float  # all segments


def generate_long(models: MovaModels, req: GenerationRequest, output: str | Path, options: RunOptions, *,
                  on_segment: Callable[[int, int], None] | None = None) -> LongResult:
    """Make every segment of `req` (segment_plan must give a plan) and write the joined MP4, WAV and PNG.

    `options` as movakit.pipeline.generate's; its `image`, `enhancer` and `draw_first_frame` serve segment 0 only,
    and `on_segment(k, count)` is called as segment k starts (k from 0).
    """
    from movakit.pipeline import make_clip

    plan = segment_plan(req.require_resolved())
    if plan is None:
        raise ValueError(f"generate_long: duration_s {req.duration_s:g} fits in one clip of {req.num_frames} "
                         f"frames; use movakit.pipeline.generate")
    clips, conditioning, prompt, first, denoise_s = [], [], req.prompt, None, 0.0
    for k in range(plan.count):
        if on_segment is not None:
            on_segment(k, plan.count)
        segment_options = options
        if k > 0:
            image = frame_png(clips[-1].frames[-1])
            conditioning.append(image)
            segment_options = dataclasses.replace(options, image=image, enhancer=None, draw_first_frame=None)
        made = make_clip(models, segment_request(req, k, prompt), segment_options)
        if k == 0:
            first, prompt = made, made.prompt_used
        clips.append(made.clip)
        denoise_s += made.times.denoise_s
    options.stage("write")
    joined = join_segments(plan, clips)
    mp4, wav, png = write_outputs(joined, output)
    return LongResult(mp4=mp4, wav=wav, png=png, prompt_used=prompt, enhance_backend=first.enhance_backend,
                      enhance_events=first.enhance_events, plan=plan, conditioning=tuple(conditioning),
                      segments=tuple(clips), clip=joined, denoise_s=denoise_s)
