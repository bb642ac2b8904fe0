"""Long videos: how many segments a duration needs, and joins with no click or level step in the sound."""

from __future__ import annotations

import numpy as np
import pytest

from movakit.segments import crossfade, join_audio, join_frames, join_stats, overlap_samples, plan_segments

SR, FPS = 48_000, 24.0


def test_plan_covers_the_duration_with_the_fewest_segments():
    one = plan_segments(8.0, 24.0, 193)
    assert (one.count, one.total_frames) == (1, 193)
    two = plan_segments(16.0, 24.0, 193)  # 384 frames wanted: 193 + 192 = 385
    assert (two.count, two.total_frames, two.first_frame(1)) == (2, 385, 192)
    assert two.duration_s >= 16.0
    tiny = plan_segments(2.0, 24.0, 17)  # 48 frames: 17 + 16 + 16 = 49
    assert (tiny.count, tiny.total_frames) == (3, 49)
    with pytest.raises(ValueError):
        plan_segments(0, 24.0, 17)


def _segments(count: int, frames: int, seed: int) -> list[np.ndarray]:
    """Unrelated sound per segment, the same level: low-passed noise (as two separately generated clips are)."""
    rng = np.random.default_rng(seed)
    kernel = np.hanning(48) / np.hanning(48).sum()
    return [np.convolve(rng.standard_normal(frames * SR // int(FPS)), kernel, mode="same").astype(np.float32) * 4
            for _ in range(count)]


def test_joins_have_no_click_and_no_level_step():
    segs = _segments(3, 17, seed=0)
    joined = join_audio(segs, SR, FPS)
    overlap = overlap_samples(SR, FPS)
    assert joined.shape == (49 * overlap,)  # as long as the joined video: 49 frames of 2000 samples
    joins = [17 * overlap - overlap // 2, 33 * overlap - overlap // 2]  # middle of each crossfade
    jump_ratio, level_step = join_stats(joined, joins, SR)
    assert jump_ratio < 1.0  # no sample step larger than the signal's own largest steps
    assert level_step < 1.0  # no 5 ms window around a join off the median level by a factor 2

    # the same measurement catches a plain cut (it can fail): the step at the cut is large
    cut = np.concatenate([segs[0], segs[1][overlap:]])
    cut[17 * overlap - 1] = 1.5 * np.abs(segs[0]).max()  # a click at the cut
    cut_ratio, _ = join_stats(cut, [17 * overlap], SR)
    assert cut_ratio > 1.0


def test_crossfade_keeps_power_of_unrelated_signals_and_frames_drop_the_repeated_frame():
    a, b = _segments(2, 100, seed=1)
    a, b = a[:50_000], b[:50_000]
    mixed = crossfade(a, b)
    assert abs(np.mean(mixed**2) / ((np.mean(a**2) + np.mean(b**2)) / 2) - 1) < 0.05
    frames = [np.full((17, 2, 2, 3), i, np.uint8) for i in range(3)]
    joined = join_frames(frames)
    assert joined.shape[0] == 49 and list(joined[[0, 16, 17, 32, 33, 48], 0, 0, 0]) == [0, 0, 1, 1, 2, 2]


def test_crossfade_of_the_same_sound_in_phase_neither_swells_nor_dips():
    t = np.arange(48_000) / SR
    tone = (0.5 * np.sin(2 * np.pi * 400 * t)).astype(np.float32)  # the same tone in both segments, in phase; 2 periods per 5 ms window
    segs = [tone[:17 * 2000], tone[16 * 2000:33 * 2000]]
    join = 17 * 2000 - 1000
    _, level = join_stats(join_audio(segs, SR, FPS), [join], SR)
    assert level < 0.05  # the correlation-matched gains sum to 1: the tone goes on at its level
    _, fixed = join_stats(join_audio(segs, SR, FPS, correlation=0.0), [join], SR)
    assert fixed > 0.4  # the plain equal-power fade swells by ~3 dB (log2 sqrt 2 = 0.5) on correlated sound
