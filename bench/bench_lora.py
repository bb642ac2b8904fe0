"""Cost of a LoRA adapter per denoise step: none vs unmerged (the serving default) vs merged, as ratios of one run.

Builds the small MOVA-shaped model of bench_denoise_step.py (random weights), a random adapter of rank --rank on
every official accelerate target layer (every DiT block linear and the bridge q/k/v/o), and times
`movakit.stages.denoise.denoise` with CFG in rounds that alternate the three variants (so load on the machine
hits them alike). Merged runs on a copy of the models with the adapter merged in.

    .venv/bin/python bench/bench_lora.py                      # small config, rank 16, 3 rounds of 2 steps
    .venv/bin/python bench/bench_lora.py --tiny --rounds 1    # smoke run

Prints seconds per step and the ratios to no adapter; no assertion on speed anywhere. Random weights: the
latents are noise; only the time is of interest.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_denoise_step import CONFIGS, build_models, denoise_request  # noqa: E402

from movakit.loading import MovaModels  # noqa: E402
from movakit.lora.adapter import LoraAdapter, applied, merge_into  # noqa: E402
from movakit.lora.targets import components_of, target_layers  # noqa: E402
from movakit.stages.denoise import denoise  # noqa: E402


def random_adapter(models: MovaModels, rank: int, dtype: torch.dtype) -> LoraAdapter:
    g = torch.Generator().manual_seed(1)
    layers = {key: ((torch.randn(rank, layer.in_features, generator=g) * 0.01).to(dtype),
                    (torch.randn(layer.out_features, rank, generator=g) * 0.01).to(dtype))
              for key, layer in target_layers(components_of(models), "accelerate").items()}
    return LoraAdapter(rank=rank, alpha=float(rank), targets="accelerate", layers=layers)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="use the tiny test sizes (smoke run)")
    ap.add_argument("--rank", type=int, default=16, help="adapter rank (the accelerate trainer's default: 16)")
    ap.add_argument("--steps", type=int, default=2, help="denoise steps per timed run")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (none, unmerged, merged)")
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--num-frames", type=int, default=17)
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    cfgs = CONFIGS["tiny" if args.tiny else "small"]
    models = build_models(cfgs, dtype)
    adapter = random_adapter(models, args.rank, dtype)
    merged = copy.deepcopy(models)
    merge_into(merged, adapter)
    req, _tokens = denoise_request(cfgs[0], args.height, args.width, args.num_frames, 24.0, args.steps)

    def per_step(run_models: MovaModels, lora: LoraAdapter | None) -> float:
        with applied(run_models, lora):
            start = time.perf_counter()
            denoise(run_models, req)
            return (time.perf_counter() - start) / args.steps

    per_step(models, None)  # warm-up
    times: dict[str, list[float]] = {"none": [], "unmerged": [], "merged": []}
    for i in range(args.rounds):
        times["none"].append(per_step(models, None))
        times["unmerged"].append(per_step(models, adapter))
        times["merged"].append(per_step(merged, None))
        print(f"round {i + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.3f} s/step" for k, v in times.items()),
              file=sys.stderr, flush=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"config: {'tiny' if args.tiny else 'small'}, {args.dtype}, threads {torch.get_num_threads()}, "
          f"rank {args.rank}, {len(adapter.layers)} adapted layers, {adapter.num_parameters()} adapter parameters")
    for name, seconds in median.items():
        print(f"{name:>8}: {seconds:.3f} s per denoise step (median of {args.rounds})")
    print(f"ratio unmerged / none: {median['unmerged'] / median['none']:.3f}")
    print(f"ratio merged / none:   {median['merged'] / median['none']:.3f}")
    print(f"ratio unmerged / merged: {median['unmerged'] / median['merged']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
