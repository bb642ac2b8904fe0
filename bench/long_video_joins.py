"""How audible the joins of a long video are: the equal-power crossfade against a plain cut, on real output.

Makes a long video on the tiny demo checkpoint (movakit.long_video.generate_long, the code `mova generate
--duration` runs) and measures each join of its sound with movakit.segments.join_stats, once as written
(crossfaded over one frame with correlation-matched gains), once with the plain equal-power fade, and once as a
plain cut of the same segments (segment k's sound without its first frame's duration, butted on). docs/long-videos.md quotes the numbers.

    .venv/bin/python bench/long_video_joins.py                       # 3 segments, 2 steps, seed 42
    .venv/bin/python bench/long_video_joins.py --duration 4 --seed 7

Prints ratios only; no assertion anywhere.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from movakit import request as contract
from movakit.loading import MovaCheckpoint
from movakit.loading.demo import default_demo_checkpoint
from movakit.long_video import generate_long
from movakit.model_rules import ModelRules
from movakit.pipeline import RunOptions
from movakit.segments import join_audio, join_stats, overlap_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds (default 2: 3 segments of 17 frames)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=contract.GENERATE_SEED)
    args = parser.parse_args()
    torch.set_num_threads(1)

    path = default_demo_checkpoint()
    rules = ModelRules.from_checkpoint(path)
    models = MovaCheckpoint(path).load(device="cpu", dtype=torch.float32)
    req = contract.GenerationRequest(prompt="Rain on a tin roof; a train passes in the distance.",
                                     num_inference_steps=args.steps, seed=args.seed, duration_s=args.duration)
    req = contract.validate(contract.resolve(req, rules), rules)
    with tempfile.TemporaryDirectory() as tmp:
        result = generate_long(models, req, Path(tmp) / "long.mp4", RunOptions(rules=rules))
    plan, rate = result.plan, result.clip.sample_rate
    per_frame = overlap_samples(rate, plan.fps)
    length = plan.clip_frames * per_frame
    fade_joins = [plan.first_frame(k) * per_frame + per_frame // 2 for k in range(1, plan.count)]
    cut = np.concatenate([result.segments[0].audio[:length],
                          *(s.audio[per_frame:length] for s in result.segments[1:])])
    cut_joins = [length + (k - 1) * (length - per_frame) for k in range(1, plan.count)]

    audio = result.clip.audio.astype(np.float64)
    lag1 = float(np.corrcoef(audio[:-1], audio[1:])[0, 1])
    print(f"tiny checkpoint, seed {req.seed}, {req.num_inference_steps} steps: {plan.count} segments of "
          f"{plan.clip_frames} frames at {plan.fps:g} fps, sound {rate} Hz, overlap {per_frame} samples")
    print(f"sound: RMS {np.sqrt(np.mean(audio**2)):.3f}, lag-1 autocorrelation {lag1:.3f} (1 = smooth, 0 = white)")
    power = join_audio([s.audio[:length] for s in result.segments], rate, plan.fps, correlation=0.0)
    print("join  (jump ratio, level |log2|) of: the written join  equal-power fade  plain cut")
    for k, (fade, plain) in enumerate(zip(fade_joins, cut_joins), start=1):
        rows = (join_stats(audio, [fade], rate), join_stats(power, [fade], rate), join_stats(cut, [plain], rate))
        print(f"{k:4d}  " + "  ".join(f"({jump:.3f}, {level:.3f})" for jump, level in rows))


if __name__ == "__main__":
    main()
