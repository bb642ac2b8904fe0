"""Step caching (movakit/models/step_cache.py): the speed-up of a whole denoise run and the drift of its final
video and audio latents against the uncached run, for a few thresholds, measured in one run.

The models are bench_denoise_step.py's MOVA-shaped configs with random weights: the latents are noise, and how far
they drift says how the cache behaves on this model, not how a real checkpoint's videos change (TeaCache fits its
threshold scale on real checkpoints). Runs alternate between the uncached run and each threshold (--repeats
rounds); the time of each is the median over the rounds. Drift is the relative L2 norm ||cached - uncached|| /
||uncached|| of the final latents (the same in every round: the runs are deterministic).

    .venv/bin/python bench/bench_step_cache.py --tiny                       # seconds on a CPU
    .venv/bin/python bench/bench_step_cache.py --threads 2 --steps 20       # the small config (2,304 video tokens)

Prints ratios only; no assertion on speed anywhere.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from bench_denoise_step import CONFIGS, build_models, denoise_request
from movakit.stages.denoise import denoise


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the tiny test sizes (a 64x96 clip of 17 frames)")
    ap.add_argument("--steps", type=int, default=20, help="denoise steps per run")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4])
    ap.add_argument("--repeats", type=int, default=2, help="rounds (every variant once per round)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfgs = CONFIGS["tiny" if args.tiny else "small"]
    models = build_models(cfgs, torch.float32)
    size = (64, 96, 17) if args.tiny else (256, 256, 33)
    req, tokens = denoise_request(cfgs[0], *size, 24.0, args.steps)
    print(f"config: {'tiny' if args.tiny else 'small'}, float32, threads {torch.get_num_threads()}, {args.steps} "
          f"steps, CFG as two B=1 forwards; tokens: video {tokens.video}, audio {tokens.audio}; random weights "
          "(outputs are noise)")
    variants = [None, *args.thresholds]
    times: dict[float | None, list[float]] = {t: [] for t in variants}
    results = {}
    with torch.no_grad():
        for _ in range(args.repeats):
            for threshold in variants:
                t0 = time.perf_counter()
                results[threshold] = denoise(models, replace(req, step_cache=threshold), cfg_batch=False)
                times[threshold].append(time.perf_counter() - t0)
    base = results[None]
    off = statistics.median(times[None])
    print(f"uncached: {off:.2f} s per run ({2 * args.steps} forwards)")
    for threshold in args.thresholds:
        out, med = results[threshold], statistics.median(times[threshold])
        drift = [((a - b).norm() / b.norm()).item() for a, b in ((out.video_latents, base.video_latents),
                                                                   (out.audio_latents, base.audio_latents))]
        print(f"threshold {threshold:g}: {med:.2f} s, speed-up {off / med:.2f}x, blocks skipped in "
              f"{out.reused_forwards} of {2 * args.steps} forwards; drift (relative L2) video {drift[0]:.2e}, "
              f"audio {drift[1]:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
