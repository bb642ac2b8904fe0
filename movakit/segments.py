"""Long videos: the segment plan and the join of the decoded segments (docs/long-videos.md). No torch.

A request longer than one clip is made of segments of its clip length N (num_frames: the checkpoint's by default),
denoised like a normal clip. Segment k > 0 is conditioned on the last frame of segment k − 1 (the model's
first-frame conditioning), so its frame 0 shows the same moment as that frame; the join keeps the earlier
segment's frame and drops the later one's: each segment after the first adds N − 1 frames. The sound of segment k starts at that same moment, so the two
segments' sound overlaps by one frame's duration (sample_rate / fps samples); the overlap is crossfaded with
sin/cos gains matched to the two sounds' correlation, which keeps the level steady through the join where a plain
cut would leave a step between two unrelated waveforms (docs/long-videos.md measures these).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SegmentPlan:
    clip_frames: int  # frames of one segment (the checkpoint's clip length)
    count: int  # segments
    fps: float

    @property
    def total_frames(self) -> int:
        return self.clip_frames + (self.count - 1) * (self.clip_frames - 1)

    @property
    def duration_s(self) -> float:
        return self.total_frames / self.fps

    def first_frame(self, segment: int) -> int:
        """Index in the joined video of segment `segment`'s frame 0."""
        return segment * (self.clip_frames - 1)


def plan_segments(duration_s: float, fps: float, clip_frames: int) -> SegmentPlan:
    """The fewest segments whose joined video lasts at least `duration_s` (at least one segment)."""
    if clip_frames < 2:
        raise ValueError(f"clip_frames must be >= 2, got {clip_frames}")
    if not duration_s > 0 or not fps > 0:
        raise ValueError(f"duration_s and fps must be > 0, got {duration_s}, {fps}")
    wanted = math.ceil(duration_s * fps - 1e-9)
    extra = max(0, wanted - clip_frames)
    return SegmentPlan(clip_frames=clip_frames, count=1 + math.ceil(extra / (clip_frames - 1)), fps=fps)


def overlap_samples(sample_rate: int, fps: float) -> int:
    """Samples of sound two consecutive segments share: one frame's duration."""
    return round(sample_rate / fps)


def crossfade(tail: np.ndarray, head: np.ndarray, correlation: float | None = None) -> np.ndarray:
    """Crossfade of two equal-length float arrays that keeps the level steady: tail fades out, head fades in.

    The gains are the equal-power pair p = cos, q = sin scaled by 1 / sqrt(1 + 2·r·p·q), where r is the two
    signals' correlation over the overlap (measured when `correlation` is None; clipped to 0..1). Then the mix's
    expected power p²+q²+2rpq stays that of either input: unrelated sounds (r = 0) get the equal-power fade,
    the same sound in phase (r = 1) gets gains that sum to 1 (a linear fade's level), and nothing in between
    swells or dips (docs/long-videos.md measures why this matters on real output)."""
    if tail.shape != head.shape:
        raise ValueError(f"crossfade: {tail.shape} and {head.shape} differ")
    n = tail.shape[0]
    a, b = tail.astype(np.float64), head.astype(np.float64)
    if correlation is None:
        norm = np.sqrt(np.dot(a, a) * np.dot(b, b))
        correlation = float(np.dot(a, b) / norm) if norm > 0 else 0.0
    r = min(max(correlation, 0.0), 1.0)
    phase = (np.arange(n, dtype=np.float64) + 0.5) / n * (np.pi / 2)
    p, q = np.cos(phase), np.sin(phase)
    scale = 1.0 / np.sqrt(1.0 + 2.0 * r * p * q)
    return (a * p * scale + b * q * scale).astype(tail.dtype)


def join_frames(segments: list[np.ndarray]) -> np.ndarray:
    """(N, H, W, 3) uint8 per segment -> the joined video: the first whole, then each without its frame 0."""
    return np.concatenate([segments[0], *(s[1:] for s in segments[1:])], axis=0)


def join_audio(segments: list[np.ndarray], sample_rate: int, fps: float,
               correlation: float | None = None) -> np.ndarray:
    """(samples,) float32 per segment -> the joined sound, each join crossfaded over one frame's duration
    (`correlation` as crossfade's: None = measured at each join; 0 = the plain equal-power fade)."""
    overlap = overlap_samples(sample_rate, fps)
    out = segments[0]
    for nxt in segments[1:]:
        if min(out.shape[0], nxt.shape[0]) < overlap:
            raise ValueError(f"join_audio: a segment is shorter than the {overlap}-sample overlap")
        mixed = crossfade(out[-overlap:], nxt[:overlap], correlation)
        out = np.concatenate([out[:-overlap], mixed, nxt[overlap:]])
    return out


def join_stats(audio: np.ndarray, joins: list[int], sample_rate: int) -> tuple[float, float]:
    """How audible the joins at sample indices `joins` are (the measure of docs/long-videos.md):
    (the largest sample jump at a join / the 99.9th percentile jump elsewhere,
     the largest |log2| of a 5 ms window's RMS around a join (2 windows before, 1 after) against the median
     window RMS). Below 1 and 1: no step larger than the signal's own, no window off the median level by 2x."""
    audio = np.asarray(audio, dtype=np.float64)
    jumps = np.abs(np.diff(audio))
    at_join = max(jumps[j - 1] for j in joins)
    elsewhere = np.percentile(np.delete(jumps, [j - 1 for j in joins]), 99.9)
    win = sample_rate // 200
    rms = np.sqrt(np.convolve(audio**2, np.ones(win) / win, mode="valid"))
    level = np.median(rms)
    around = [rms[j - 2 * win:j + win] for j in joins]
    return float(at_join / elsewhere), float(max(np.abs(np.log2(r / level)).max() for r in around))
