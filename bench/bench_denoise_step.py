"""Seconds per denoise step, achieved FLOP/s as a fraction of this machine's matmul peak, and (with --compare)
the ratio to the exact (official) path, all measured in one run.

Builds a MOVA-shaped model (random weights: the outputs are noise; head_dim 128 like the release, fewer and
narrower layers) from configs and runs `movakit.stages.denoise.denoise` with CFG. The default clip (256x256,
33 frames) gives 2,304 video tokens, well above the 512 text tokens. Every run is one job (fresh context tensors);
its first step, which also computes the memoised text keys and values, is reported apart; the later steps give
the median and the min. The matmul FLOPs of one step are counted analytically from the configs (the official
count, and what still runs once the text keys and values are memoised), and a square-matmul peak is measured in
the same process, same dtype and threads, before and after the timed runs.

--compare also runs the exact path: the official step's kernels (float64 RoPE, nn.RMSNorm, unfused modulation and
residuals, RoPE tables and text keys and values at every forward; re-created here by patching, see exact_path),
alternating jobs with the current one, and prints the ratio of the step times and the largest difference of the
final latents.

    .venv/bin/python bench/bench_denoise_step.py --threads 2 --compare --pairs 8   # default small config
    .venv/bin/python bench/bench_denoise_step.py --tiny --steps 2 --compare     # smoke run (the tiny test config)

Prints ratios only; no assertion on speed anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
from dataclasses import dataclass, replace

import torch

from movakit.execution import compile_denoiser
from movakit.loading import MovaModels
from movakit.loading.checkpoint import DEFAULT_BOUNDARY_RATIO
from movakit.loading.demo import tiny_config
from movakit.loading.release_configs import release_config
from movakit.models.audio_dit import AudioDiT, AudioDiTConfig
from movakit.models.bridge import BridgeAttention, BridgeConfig, DualTowerBridge
from movakit.models.layers import dit_block
from movakit.models.layers.attention import SelfAttention, TextCrossAttention, multi_head_attention
from movakit.models.layers.dit_block import DiTBlock, DiTTower, Head
from movakit.models.layers.pointwise import opmath_dtype
from movakit.models.layers.rope import apply_rope_interleaved
from movakit.models.layers.text_memo import TextMemo
from movakit.models.video_dit import VideoDiT, VideoDiTConfig
from movakit.schedulers.flow_match_pair import FlowMatchPairScheduler
from movakit.stages.denoise import DenoiseRequest, audio_latent_length, denoise

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


def text_flops(c: dict) -> float:
    """The part of tower_flops that depends on the text only (embedding MLP, every block's cross-attention k, v):
    memoised, so run once per job rather than per forward."""
    d, lt = c["dim"], TEXT_LEN
    return 2 * lt * (c["text_dim"] * d + d * d) + c["num_layers"] * 2 * 2 * lt * d * d


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


def _exact_modulate(x, shift, scale):
    return x * (1 + scale) + shift if x.dtype == opmath_dtype(x.dtype) else dit_block.modulate(x, shift, scale)


def _exact_rotate_half(x, cos, sin, num_heads):
    b, n, d = x.shape
    wide = opmath_dtype(x.dtype)
    xh = x.reshape(b, n, num_heads, d // num_heads).to(wide)
    x1, x2 = xh.chunk(2, dim=-1)
    c, s = cos.to(x.dtype).to(wide)[None, :, None], sin.to(x.dtype).to(wide)[None, :, None]
    return (xh * c + torch.cat([-x2, x1], dim=-1) * s).reshape(b, n, d).to(x.dtype)


def _exact_self_attn(self, x, freqs):
    q, k, v = self.norm_q(self.q(x)), self.norm_k(self.k(x)), self.v(x)
    q, k = apply_rope_interleaved(q, freqs, self.num_heads), apply_rope_interleaved(k, freqs, self.num_heads)
    return self.o(multi_head_attention(q, k, v, self.num_heads, self.kv_stream))


def _exact_cross_attn(self, x, context_kv):
    k, v = context_kv
    return self.o(multi_head_attention(self.norm_q(self.q(x)), k, v, self.num_heads))


def _exact_bridge_attn(self, x, y, x_rope, y_rope):
    q = _exact_rotate_half(self.norm_q(self.q(x)), *x_rope, self.num_heads)
    k = _exact_rotate_half(self.norm_k(self.k(y)), *y_rope, self.num_heads)
    return self.o(multi_head_attention(q, k, self.v(y), self.num_heads, self.kv_stream))


def _exact_block(self, x, context_kv, t_mod, freqs):
    mod = self.modulation.to(x.dtype) + t_mod.to(x.dtype)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)
    x = x + gate_msa * self.self_attn(_exact_modulate(self.norm1(x), shift_msa, scale_msa), freqs)
    x = x + self.cross_attn(self.norm3(x), context_kv)
    return x + gate_mlp * self.ffn(_exact_modulate(self.norm2(x), shift_mlp, scale_mlp))


def _exact_head(self, x, t_emb):
    shift, scale = (self.modulation.to(x.dtype) + t_emb.to(x.dtype)[:, None, :]).chunk(2, dim=1)
    return self.head(self.norm(x) * (1 + scale) + shift)


def _exact_bridge(self, layer_idx, video_x, audio_x, *, video_rope, audio_rope, a2v_condition_scale=1.0,
                  v2a_condition_scale=1.0):
    key = str(layer_idx)
    a2v = self.audio_to_video_conditioners[key](video_x, audio_x, video_rope, audio_rope)
    v2a = self.video_to_audio_conditioners[key](audio_x, video_x, audio_rope, video_rope)
    return video_x + a2v * a2v_condition_scale, audio_x + v2a * v2a_condition_scale


_EXACT = (  # (owner, attribute, the official formulation)
    (SelfAttention, "forward", _exact_self_attn),
    (TextCrossAttention, "forward", _exact_cross_attn),
    (TextCrossAttention, "context_kv", lambda self, c: (self.norm_k(self.k(c)), self.v(c))),
    (BridgeAttention, "forward", _exact_bridge_attn),
    (DiTBlock, "forward", _exact_block),
    (Head, "forward", _exact_head),
    (DualTowerBridge, "forward", _exact_bridge),
    (DiTTower, "rope_table", lambda self, grid: self.rope_freqs(grid)),  # complex128: the float64 product
    (DualTowerBridge, "aligned_rope", DualTowerBridge.build_aligned_rope),  # every forward
    (TextMemo, "get", lambda self, context, weights, compute, modules=(): compute()),  # text k, v every forward
)


@contextlib.contextmanager
def exact_path():
    """The official step's kernels, re-created by patching (what movakit ran before this module's fast kernels,
    bit-identical to the official code on the CPU in float32): float64 interleaved RoPE from a complex128 table,
    nn.RMSNorm, separate multiplies and adds for the modulation, gates and the bridge RoPE, RoPE tables and the
    text keys and values computed at every forward."""
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in _EXACT]
    for owner, name, fn in _EXACT:
        setattr(owner, name, fn)
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


@dataclass
class Timings:
    first: list[float]
    steady: list[float]
    latents: tuple[torch.Tensor, torch.Tensor] | None = None


def timed_job(models: MovaModels, req: DenoiseRequest, cfg_batch: bool, into: Timings) -> None:
    """One job (fresh context tensors, so nothing memoised carries over); step times appended to ``into``."""
    req = replace(req, context=req.context.clone(), negative_context=req.negative_context.clone())
    stamps = []
    start = time.perf_counter()
    out = denoise(models, req, cfg_batch=cfg_batch, on_step=lambda info: stamps.append(time.perf_counter()))
    times = [b - a for a, b in zip([start, *stamps[:-1]], stamps)]
    into.first.append(times[0])
    into.steady.extend(times[1:])
    into.latents = (out.video_latents, out.audio_latents)


def denoise_request(v_cfg: dict, height: int, width: int, num_frames: int, fps: float,
                    steps: int) -> tuple[DenoiseRequest, Tokens]:
    """A CFG request of random contexts and first-frame latents for a clip, and its token counts."""
    t_lat, h_lat, w_lat = (num_frames - 1) // 4 + 1, height // 8, width // 8
    a_len = audio_latent_length(SAMPLE_RATE, HOP, num_frames, fps)
    req = DenoiseRequest(
        context=torch.randn(1, TEXT_LEN, v_cfg["text_dim"]),
        negative_context=torch.randn(1, TEXT_LEN, v_cfg["text_dim"]),
        y=torch.randn(1, 20, t_lat, h_lat, w_lat),
        height=height, width=width, num_frames=num_frames, fps=fps,
        num_inference_steps=steps, guidance_scale=5.0, seed=0, audio_latent_length=a_len,
    )
    return req, Tokens(video=t_lat * (h_lat // 2) * (w_lat // 2), audio=a_len)


def build_models(cfgs, dtype: torch.dtype) -> MovaModels:
    v_cfg, a_cfg, b_cfg = cfgs
    return MovaModels(
        video_dit=VideoDiT(VideoDiTConfig.from_dict(v_cfg)).to(dtype).eval(),
        video_dit_2=VideoDiT(VideoDiTConfig.from_dict(v_cfg)).to(dtype).eval(),
        audio_dit=AudioDiT(AudioDiTConfig.from_dict(a_cfg)).to(dtype).eval(),
        bridge=DualTowerBridge(BridgeConfig.from_dict(b_cfg)).to(dtype).eval(),
        scheduler=FlowMatchPairScheduler.from_config(release_config("scheduler")),
        boundary_ratio=DEFAULT_BOUNDARY_RATIO,
    )


@torch.no_grad()
def forward_pair_ratios(models: MovaModels, req: DenoiseRequest, pairs: int) -> list[float]:
    """now / exact time of one B=1 dual-tower forward (the first step's inputs), measured in adjacent pairs whose
    order alternates, so that a change of the machine's load hits both sides of a pair alike."""
    from movakit.models.dual_tower import dual_tower_forward

    latent = torch.randn(1, req.y.shape[1] - 4, *req.y.shape[2:])
    t = torch.tensor([1000.0])
    audio = torch.randn(1, models.audio_dit.config.in_dim, req.audio_latent_length)
    kwargs = dict(video_x=torch.cat([latent, req.y], dim=1), audio_x=audio, context=req.context, t_video=t,
                  t_audio=t, video_fps=req.fps)

    def timed(path) -> float:
        with path():
            start = time.perf_counter()
            dual_tower_forward(models.video_dit, models.audio_dit, models.bridge, **kwargs)
            return time.perf_counter() - start

    timed(contextlib.nullcontext)  # memoises the text keys and values and the tables, as a job's first step does
    ratios = []
    for k in range(pairs):
        order = (contextlib.nullcontext, exact_path) if k % 2 == 0 else (exact_path, contextlib.nullcontext)
        first, second = timed(order[0]), timed(order[1])
        ratios.append(first / second if k % 2 == 0 else second / first)
    return ratios


def report(name: str, t: Timings, flops: float, executed: float, peaks: tuple[float, float]) -> float:
    """Print one variant's figures; returns its median steady step time."""
    steady = t.steady or t.first
    med = statistics.median(steady)
    print(f"{name}: first step {statistics.median(t.first):.3f} s; seconds per denoise step: median {med:.3f}, "
          f"min {min(steady):.3f} ({len(steady)} steps)")
    for label, f in (("official FLOPs", flops), ("executed FLOPs", executed)):
        print(f"  {label}: {f / med / 1e9:.2f} GFLOP/s; fraction of matmul peak: "
              f"{f / med / peaks[0]:.3f} (peak before), {f / med / peaks[1]:.3f} (peak after)")
    return med


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="use the tiny test sizes (smoke run)")
    ap.add_argument("--steps", type=int, default=3, help="denoise steps per job (the first is reported apart)")
    ap.add_argument("--repeats", type=int, default=2, help="jobs per variant (alternating with --compare)")
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--num-frames", type=int, default=33)
    ap.add_argument("--fps", type=float, default=24.0)
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--cfg-batch", action="store_true", help="one B=2 forward per step instead of two B=1")
    ap.add_argument("--compare", action="store_true", help="also time the exact (official) path, alternating")
    ap.add_argument("--pairs", type=int, default=0, help="with --compare: also time this many pairs of single "
                    "forwards (now, exact; the order alternates) and print the median of the pair ratios")
    ap.add_argument("--peak-size", type=int, default=2048, help="n of the n×n×n matmul that measures the peak")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the blocks first (compile_denoiser; the "
                    "first step of each path then includes the compilation)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps < 2:
        ap.error("--steps must be >= 2 (the first step is reported apart)")
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    cfgs = CONFIGS["tiny" if args.tiny else "small"]
    v_cfg, a_cfg, _ = cfgs
    models = build_models(cfgs, dtype)
    if args.compile:
        compile_denoiser(models)
    req, tokens = denoise_request(v_cfg, args.height, args.width, args.num_frames, args.fps, args.steps)
    print(f"config: {'tiny' if args.tiny else 'small'}, {args.dtype}, threads {torch.get_num_threads()}, "
          f"cfg_batch {args.cfg_batch}, compiled blocks {args.compile}; random weights (outputs are noise)")
    print(f"tokens: video {tokens.video}, audio {tokens.audio}, text {TEXT_LEN}")
    variants = {"now": contextlib.nullcontext, **({"exact": exact_path} if args.compare else {})}
    timings = {name: Timings([], []) for name in variants}
    peak_before = matmul_peak(dtype, n=args.peak_size)
    for _ in range(args.repeats):
        for name, path in variants.items():
            with path():
                timed_job(models, req, args.cfg_batch, timings[name])
    peak_after = matmul_peak(dtype, n=args.peak_size)

    flops = step_flops(cfgs, tokens, forwards=2)  # CFG: positive + negative branch
    executed = flops - 2 * (text_flops(v_cfg) + text_flops(a_cfg))
    print(f"matmul FLOPs per step (2 forwards): official {flops / 1e9:.2f} GFLOP, executed {executed / 1e9:.2f} "
          f"GFLOP (text keys and values memoised)")
    print(f"matmul peak ({args.peak_size}^3, same run): before {peak_before / 1e9:.2f} GFLOP/s, "
          f"after {peak_after / 1e9:.2f} GFLOP/s")
    # the exact path recomputes the text keys and values at every forward: it executes the official count
    ran = {"now": executed, "exact": flops}
    med = {name: report(name, t, flops, ran[name], (peak_before, peak_after)) for name, t in timings.items()}
    if args.compare:
        now, exact = timings["now"], timings["exact"]
        print(f"ratio now / exact: median step {med['now'] / med['exact']:.3f}, "
              f"min step {min(now.steady) / min(exact.steady):.3f}")
        for label, a, b in zip(("video", "audio"), now.latents, exact.latents):
            rel = ((a - b).abs().max() / b.abs().max()).item()
            print(f"final {label} latents, now vs exact: max relative difference {rel:.2e}")
        if args.pairs:
            ratios = forward_pair_ratios(models, req, args.pairs)
            print(f"forward pairs: now / exact median {statistics.median(ratios):.3f}, min {min(ratios):.3f}, "
                  f"max {max(ratios):.3f} ({len(ratios)} pairs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
