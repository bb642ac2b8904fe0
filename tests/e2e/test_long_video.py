"""`mova generate --duration` on the tiny demo checkpoint: two segments joined into one MP4 whose length, join
frames and sound at the join are checked on the real output, segment 2 made from its shot (docs/long-videos.md)."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
import torch
from PIL import Image

import movakit.pipeline as pipeline
from movakit.cli import main
from movakit.media import probe, read_video_frames
from movakit.segments import join_stats, overlap_samples, plan_segments

H, W, N, FPS, STEPS, SECONDS = 32, 48, 9, 12.0, 2, 1.2  # 1.2 s = 15 frames: 9 + 8 = 17 in two segments
PROMPT, SHOT = "Rain on a tin roof, a train passes.", "The rain stops; birds sing."


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """One `mova generate --duration` run, in process, recording what each segment's encode and decode saw."""
    tmp = tmp_path_factory.mktemp("long")
    encoded, decoded = [], []
    real_encode, real_decode = pipeline.encode, pipeline.decode

    def encode(models, req, **kw):
        encoded.append(req)
        return real_encode(models, req, **kw)

    def decode(models, req):
        decoded.append(real_decode(models, req))
        return decoded[-1]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: intra-op threads only add contention
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOVA_CACHE_DIR", str(tmp / "cache"))
        mp.setattr(pipeline, "encode", encode)
        mp.setattr(pipeline, "decode", decode)
        out = tmp / "long.mp4"
        code = main(["generate", "--prompt", PROMPT, "--shot", SHOT, "--height", str(H),
                     "--width", str(W), "--num-frames", str(N), "--fps", str(FPS), "--steps", str(STEPS),
                     "--duration", str(SECONDS), "--output", str(out)])
    torch.set_num_threads(threads)
    assert code == 0
    return out, encoded, decoded


def test_the_mp4_lasts_the_requested_duration(long_run):
    out, encoded, decoded = long_run
    plan = plan_segments(SECONDS, FPS, N)
    assert plan.count == 2 and len(encoded) == len(decoded) == 2
    info = probe(out)
    assert info.num_frames == plan.total_frames == 17
    assert info.duration_s >= SECONDS
    assert out.with_suffix(".wav").is_file() and out.with_suffix(".png").is_file()


def test_each_segment_is_encoded_with_its_prompt(long_run):
    _, encoded, _ = long_run
    assert [req.prompt for req in encoded] == [PROMPT, SHOT]


def test_segment_two_starts_from_the_last_frame_of_segment_one(long_run):
    out, encoded, decoded = long_run
    last = decoded[0].frames[-1]
    assert encoded[0].image is None  # segment 0: the white frame (no --image)
    assert np.array_equal(np.asarray(encoded[1].image.convert("RGB")), last)  # exactly that frame, lossless
    # the joined video keeps that frame at the join and drops segment 2's own (re-generated) frame 0
    frames = read_video_frames(out).astype(np.float64)
    join = N - 1
    assert not np.array_equal(decoded[1].frames[0], last)
    # (random weights: noise frames, so H.264 keeps them only roughly; the kept frame is the nearer one)
    assert np.abs(frames[join] - last).mean() < np.abs(frames[join] - decoded[1].frames[0]).mean()
    png = np.asarray(Image.open(io.BytesIO(out.with_suffix(".png").read_bytes())).convert("RGB"))
    assert np.array_equal(png, decoded[0].frames[0])


def test_the_sound_has_no_click_or_level_step_at_the_join(long_run):
    out, _, _ = long_run

    with wave.open(str(out.with_suffix(".wav"))) as w:
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float64) / 32767
    per_frame = overlap_samples(rate, FPS)
    assert audio.shape[0] == 17 * per_frame  # the sound as long as the joined video
    join = (N - 1) * per_frame + per_frame // 2  # the middle of the crossfade
    jump, level = join_stats(audio, [join], rate)
    assert jump < 1.0  # no sample step larger than the sound's own largest steps
    # level within 19 % of the median: the tiny model's sound is alike in both segments, where a plain
    # equal-power fade would swell by 3 dB (|log2| 0.5, docs/long-videos.md)
    assert level < 0.25
