"""Seconds per denoise step, and achieved FLOP/s as a fraction of this machine's measured matmul peak.

Builds a small MOVA-shaped model (random weights, head_dim 128 like the release, fewer and narrower layers) from
configs, runs `movakit.stages.denoise.denoise` for a few steps with CFG, counts the matmul FLOPs of one step
analytically from the configs, and measures a square-matmul peak in the same run with the same dtype and threads.

    .venv/bin/python bench/bench_denoise_step.py                   # default small config, 3 steps
    .venv/bin/python bench/bench_denoise_step.py --tiny --steps 1  # smoke run (the tiny test config)

Prints ratios only; no assertion on speed anywhere.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import torch

from movakit.loading import MovaModels
from movakit.loading.checkpoint import DEFAULT_BOUNDARY_RATIO
from movakit.models.audio_dit import AudioDiT, AudioDiTConfig
from movakit.models.bridge import BridgeConfig, DualTowerBridge
from movakit.models.video_dit import VideoDiT, VideoDiTConfig
from movakit.schedulers.flow_match_pair import FlowMatchPairScheduler
from movakit.stages.denoise import DenoiseRequest, audio_latent_length, denoise
from movakit.loading.release_configs import release_config
from movakit.loading.demo import tiny_config

TEXT_LEN = 512  # umT5 context length, as the release
SAMPLE_RATE, HOP = 48_000, 960  # release DAC: 50 Hz latents


def _sized(folder: str, **sizes) -> dict:
    """The release config of `folder` with only the sizes changed."""
    return {**release_config(folder), **sizes}


CONFIGS = {
    # small: real head_dim (128); 1/10 of the release widths, 4 video / 3 audio layers
    "small": (
        _sized("video_dit", dim=512, num_heads=4, ffn_dim=1408, num_layers=4, text_dim=256),
        _sized("audio_dit", dim=256, num_heads=2, ffn_dim=1024, num_layers=3, text_dim=256),
        _sized("dual_tower_bridge", visual_hidden_dim=512, audio_hidden_dim=256, visual_layers=4, audio_layers=3),
    ),
    # tiny: the test checkpoint's sizes
    "tiny": (tiny_config("video_dit"), tiny_config("audio_dit"), tiny_config("dual_tower_bridge")),
}


@dataclass(frozen=True)
class Tokens:
    video: int
    audio: int


def tower_flops(c: dict, tokens: int, patch: int) -> float:
    """Matmul FLOPs (2 per multiply-add) of one tower forward for one sample, from its config."""
    d, f, lt = c["dim"], c["ffn_dim"], TEXT_LEN
    per_block = (
        4 * 2 * tokens * d * d  # self-attn q, k, v, o
        + 2 * 2 * tokens * tokens * d  # scores + weighted sum
        + 2 * 2 * tokens * d * d  # cross-attn q, o
        + 2 * 2 * lt * d * d  # cross-attn k, v over the text
        + 2 * 2 * tokens * lt * d  # cross-attn scores + sum
        + 2 * 2 * tokens * d * f  # FFN
    )
    outer = (
        2 * tokens * c["in_dim"] * patch * d  # patch embedding
        + 2 * lt * (c["text_dim"] * d + d * d)  # text embedding MLP
        + 2 * (c["freq_dim"] * d + d * d + d * 6 * d)  # time embedding + projection
        + 2 * tokens * d * c["out_dim"] * patch  # head
    )
    return c["num_layers"] * per_block + outer


def bridge_flops(b: dict, t: Tokens) -> float:
    dv, da, layers = b["visual_hidden_dim"], b["audio_hidden_dim"], min(b["visual_layers"], b["audio_layers"])
    a2v = 2 * 2 * t.video * dv * dv + 2 * 2 * t.audio * da * dv + 2 * 2 * t.video * t.audio * dv
    v2a = 2 * 2 * t.audio * da * da + 2 * 2 * t.video * dv * da + 2 * 2 * t.audio * t.video * da
    return layers * (a2v + v2a)


def step_flops(cfgs, t: Tokens, forwards: int) -> float:
    v, a, b = cfgs
    v_patch, a_patch = math.prod(v["patch_size"]), math.prod(a["patch_size"])
    return forwards * (tower_flops(v, t.video, v_patch) + tower_flops(a, t.audio, a_patch) + bridge_flops(b, t))


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an n×n×n matmul in this process (same threads, same dtype)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="use the tiny test sizes (smoke run)")
    ap.add_argument("--steps", type=int, default=3, help="denoise steps to time (the first is reported apart)")
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--num-frames", type=int, default=17)
    ap.add_argument("--fps", type=float, default=24.0)
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--no-cfg-batch", action="store_true", help="two B=1 forwards per step instead of one B=2")
    ap.add_argument("--peak-size", type=int, default=2048, help="n of the n×n×n matmul that measures the peak")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    cfgs = CONFIGS["tiny" if args.tiny else "small"]
    v_cfg, a_cfg, b_cfg = cfgs
    models = MovaModels(
        video_dit=VideoDiT(VideoDiTConfig.from_dict(v_cfg)).to(dtype).eval(),
        video_dit_2=VideoDiT(VideoDiTConfig.from_dict(v_cfg)).to(dtype).eval(),
        audio_dit=AudioDiT(AudioDiTConfig.from_dict(a_cfg)).to(dtype).eval(),
        bridge=DualTowerBridge(BridgeConfig.from_dict(b_cfg)).to(dtype).eval(),
        scheduler=FlowMatchPairScheduler.from_config(release_config("scheduler")),
        boundary_ratio=DEFAULT_BOUNDARY_RATIO,
    )
    t_lat, h_lat, w_lat = (args.num_frames - 1) // 4 + 1, args.height // 8, args.width // 8
    a_len = audio_latent_length(SAMPLE_RATE, HOP, args.num_frames, args.fps)
    tokens = Tokens(video=t_lat * (h_lat // 2) * (w_lat // 2), audio=a_len)
    req = DenoiseRequest(
        context=torch.randn(1, TEXT_LEN, v_cfg["text_dim"]),
        negative_context=torch.randn(1, TEXT_LEN, v_cfg["text_dim"]),
        y=torch.randn(1, 20, t_lat, h_lat, w_lat),
        height=args.height, width=args.width, num_frames=args.num_frames, fps=args.fps,
        num_inference_steps=args.steps, guidance_scale=5.0, seed=0, audio_latent_length=a_len,
    )
    stamps = []
    start = time.perf_counter()
    denoise(models, req, cfg_batch=not args.no_cfg_batch, on_step=lambda info: stamps.append(time.perf_counter()))
    step_times = [b - a for a, b in zip([start, *stamps[:-1]], stamps)]
    steady = step_times[1:] or step_times
    sec_per_step = sorted(steady)[len(steady) // 2]  # median of the steps after the first

    flops = step_flops(cfgs, tokens, forwards=2)  # CFG: positive + negative branch
    peak = matmul_peak(dtype, n=args.peak_size)
    achieved = flops / sec_per_step
    print(f"config: {'tiny' if args.tiny else 'small'}, {args.dtype}, threads {torch.get_num_threads()}, "
          f"cfg_batch {not args.no_cfg_batch}")
    print(f"tokens: video {tokens.video}, audio {tokens.audio}, text {TEXT_LEN}")
    print(f"first step: {step_times[0]:.3f} s; seconds per denoise step (median of the rest): {sec_per_step:.3f}")
    print(f"matmul FLOPs per step (2 forwards): {flops / 1e9:.2f} GFLOP")
    print(f"achieved: {achieved / 1e9:.2f} GFLOP/s; matmul peak ({args.peak_size}^3, same run): {peak / 1e9:.2f} GFLOP/s")
    print(f"fraction of matmul peak: {achieved / peak:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
