"""Memory of one fine-tuning step under each memory plan, measured on this machine's CPU, and an estimate of the
release-size footprint on one GPU (docs/training.md, "Memory").

Measured: for each plan a fresh subprocess builds a MOVA-shaped model (bench_denoise_step.py's configs, random
weights, float32 on the CPU), a rank-16 adapter on every official accelerate target layer, and a random encoded
clip (the encoders are not needed during a step: clips are encoded once, before the first step), then runs two
micro-batches (one per video expert: forward, backward) as movakit.training.loop does. The peak is the process's
resident-set high-water mark during those micro-batches above its size just before them (Linux VmHWM, reset
through /proc/self/clear_refs; glibc told to map every large block on its own, so freed memory leaves the resident
set): everything the step allocates (activations, saved tensors, gradients), whichever allocator made it. Printed
as ratios to the plan without checkpointing or offload. Time is not reported (see bench_denoise_step.py).

On a CPU-only machine the device IS host RAM: offload moves tensors between two names for the same memory, so
its effect on device memory cannot be measured here (the numbers show that it costs no extra host memory);
gradient checkpointing's effect can. For offload "blocks" the run also prints what the streamer counted: the
most block weights it held copied in at once, against all the DiT and bridge block weights.

Estimated: the release model's parameter counts (built on the meta device from the release configs: no weights
needed) times the bytes of each dtype, the LoRA parameters with float32 masters, gradients and AdamW state, and
the block inputs gradient checkpointing keeps for the official 352x640, 193-frame clip, per plan. The memory of
one video block's forward and backward (the recompute under checkpointing) is traced, not guessed: the release
block with its rank-16 LoRA runs on the meta device at the clip's token count, attention through the flash
kernel's operator (as on a GPU: O(L) statistics, no L x L matrix), and every tensor it creates is counted while
alive; the peak is that block's share.

    .venv/bin/python bench/bench_training_memory.py                  # small config, 33 frames of 256x256
    .venv/bin/python bench/bench_training_memory.py --tiny           # smoke run

No assertion anywhere; random weights: the losses are noise, only the memory is of interest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import dataclasses
import weakref
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_denoise_step import CONFIGS, HOP, SAMPLE_RATE, TEXT_LEN  # noqa: E402

from movakit.api.v1 import training_pb2  # noqa: E402
from movakit.loading import MovaModels  # noqa: E402
from movakit.loading.checkpoint import DEFAULT_BOUNDARY_RATIO  # noqa: E402
from movakit.loading.release_configs import release_config  # noqa: E402
from movakit.lora.adapter import applied, trainable  # noqa: E402
from movakit.lora.targets import target_layers  # noqa: E402
from movakit.models.audio_dit import AudioDiT, AudioDiTConfig  # noqa: E402
from movakit.models.bridge import BridgeConfig, DualTowerBridge  # noqa: E402
from movakit.models.video_dit import VideoDiT, VideoDiTConfig  # noqa: E402
from movakit.schedulers.flow_match_pair import FlowMatchPairScheduler  # noqa: E402
from movakit.stages.denoise import audio_latent_length  # noqa: E402
from movakit.training import spec  # noqa: E402
from movakit.training.memory import EXPERTS, TRAINED, MemoryPlan, Placement, stream_units  # noqa: E402
from movakit.training.objective import EncodedClip, TrainingTimesteps, flow_matching_loss  # noqa: E402
from movakit.training.runner import trainable_adapter  # noqa: E402

PLANS = {"baseline": (MemoryPlan(False, "none"), "model"), "checkpointing": (MemoryPlan(True, "none"), "model"),
         "checkpointing+model": (MemoryPlan(True, "model"), "model"),
         "checkpointing+model-and-activations": (MemoryPlan(True, "model-and-activations"), "model"),
         "checkpointing+blocks": (MemoryPlan(True, "blocks"), "model"),
         "checkpointing+blocks, float8 host": (MemoryPlan(True, "blocks"), "float8")}  # (plan, host_weights)
GB = 1e9
# The official recipe's clip (MOVA-TRAINING.md §1-2 in the project's shared notes; docs/training.md "Data")
RELEASE_FRAMES, RELEASE_HEIGHT, RELEASE_WIDTH = 193, 352, 640
BUDGET_GB = 24.0  # the official low-resource trainer's GPU (README: RTX 4090)


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _models(config: str) -> MovaModels:
    v_cfg, a_cfg, b_cfg = CONFIGS[config]
    torch.manual_seed(0)
    return MovaModels(
        video_dit=VideoDiT(VideoDiTConfig.from_dict(v_cfg)), video_dit_2=VideoDiT(VideoDiTConfig.from_dict(v_cfg)),
        audio_dit=AudioDiT(AudioDiTConfig.from_dict(a_cfg)), bridge=DualTowerBridge(BridgeConfig.from_dict(b_cfg)),
        scheduler=FlowMatchPairScheduler.from_config(release_config("scheduler")),
        boundary_ratio=DEFAULT_BOUNDARY_RATIO)


def _clip(models: MovaModels, frames: int, height: int, width: int) -> EncodedClip:
    g = torch.Generator().manual_seed(1)
    t_lat = (frames - 1) // 4 + 1
    z = models.video_dit.config.out_dim
    return EncodedClip(
        context=torch.randn(1, TEXT_LEN, models.video_dit.config.text_dim, generator=g),
        video_latents=torch.randn(1, z, t_lat, height // 8, width // 8, generator=g),
        y=torch.randn(1, models.video_dit.config.in_dim - z, t_lat, height // 8, width // 8, generator=g),
        audio_latents=torch.randn(1, models.audio_dit.config.in_dim, audio_latent_length(SAMPLE_RATE, HOP, frames, 24.0),
                                  generator=g),
        fps=24.0)


def child(args) -> None:
    """One plan in this process: print {"peak_bytes", "loss", ...} as JSON."""
    torch.set_num_threads(args.threads)
    plan, host_weights = PLANS[args.child]
    models = _models(args.config)
    for module in (models.video_dit, models.video_dit_2, models.audio_dit, models.bridge):
        module.requires_grad_(False)
    clip = _clip(models, args.frames, args.height, args.width)
    request = training_pb2.FineTuneRequest(name="bench", rank=16, alpha=16.0, seed=1, components=spec.COMPONENTS)
    adapter = trainable_adapter(models, request, torch.device("cpu"))
    with torch.no_grad():  # a trained adapter (B = 0 would give A no gradient)
        for _a, b in adapter.layers.values():
            b.normal_(std=0.01)
    timesteps = TrainingTimesteps(models.scheduler, models.boundary_ratio)
    placement = Placement(models, "cpu", components=EXPERTS + TRAINED, host_weights=host_weights)

    def micro_batches() -> list[float]:
        losses = []
        for micro_step in (0, 1):
            placement.place(plan.step(timesteps.expert(micro_step)), stream=plan.streams_blocks)
            with plan.saved_tensors(torch.device("cpu")):
                out = flow_matching_loss(models, clip, timesteps, micro_step, seed=3,
                                         run_block=plan.block_runner(placement))
            out.loss.backward()
            losses.append(float(out.loss.detach()))
        return losses

    x = torch.ones(1, requires_grad=True)  # checkpointing imports torch._dynamo on first use: not step memory
    checkpoint(torch.sin, x, use_reentrant=False).backward()
    with applied(models, adapter):
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _rss_kb("VmRSS")
        losses = micro_batches()
    peak = _rss_kb("VmHWM") - before
    blocks = sum(unit.nbytes for name in EXPERTS + TRAINED
                 for unit in placement.units(name)) if plan.streams_blocks else 0
    print(json.dumps({"peak_bytes": peak * 1024, "before_bytes": before * 1024, "loss": losses, "block_bytes": blocks,
                      "streamed_peak_bytes": placement.streamer.stats.peak_bytes}))


def measure(args) -> None:
    results = {}
    for name in PLANS:
        argv = [sys.executable, __file__, "--child", name, "--config", args.config, "--frames", str(args.frames),
                "--height", str(args.height), "--width", str(args.width), "--threads", str(args.threads)]
        # every large block mmapped and unmapped when freed, so the resident set follows what is live
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
        results[name] = json.loads(out.strip().splitlines()[-1])
    base = results["baseline"]
    print(f"measured on the CPU: config {args.config}, {args.frames} frames of {args.height}x{args.width}, "
          f"2 micro-batches (both experts), float32, rank-16 adapter on every accelerate target")
    print(f"{'plan':40s} {'peak MB':>9s} {'vs baseline':>11s} {'process before the step MB':>26s}")
    for name, r in results.items():
        print(f"{name:40s} {r['peak_bytes'] / 1e6:9.1f} {r['peak_bytes'] / base['peak_bytes']:11.3f} "
              f"{r['before_bytes'] / 1e6:26.1f}")
    same = all(r["loss"] == base["loss"] for name, (_plan, host) in PLANS.items() if host == "model"
               for r in [results[name]])
    print(f"losses identical under every plan with the model-dtype masters: {same}; with float8 host weights "
          f"{results['checkpointing+blocks, float8 host']['loss']} against {base['loss']}")
    streamed = results["checkpointing+blocks"]
    print(f"offload blocks: at most {streamed['streamed_peak_bytes'] / 1e6:.1f} MB of block weights copied in at "
          f"once, of {streamed['block_bytes'] / 1e6:.1f} MB in all DiT and bridge blocks "
          f"({streamed['streamed_peak_bytes'] / streamed['block_bytes']:.3f})")


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of every tensor storage an operator creates on `device` while it is alive; `peak` is the
    most at once."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device, self.live, self.now, self.peak = device, {}, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.device.type == self.device:
                storage = tensor.untyped_storage()
                key = storage._cdata
                if key not in self.live:
                    self.live[key] = storage.nbytes()
                    self.now += storage.nbytes()
                    self.peak = max(self.peak, self.now)
                    weakref.finalize(storage, self._free, key)
        return out

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)


def _flash_attention(q, k, v, **_kwargs):
    """The flash kernel's operator (its meta function gives the shapes of what it keeps: output and log-sum-exp)."""
    return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[0]


def traced_block_bytes(config: VideoDiTConfig, tokens: int, text_len: int = TEXT_LEN, rank: int = 16) -> int:
    """Peak bytes a release video block's forward and backward create (bf16, its rank-`rank` LoRA on every
    accelerate target, `tokens` tokens, the input's gradient), traced on the meta device."""
    with torch.device("meta"):
        tower = VideoDiT(dataclasses.replace(config, num_layers=1)).to(torch.bfloat16).requires_grad_(False)
    adapter = trainable({"video_dit": tower}, "accelerate", rank, float(rank), device="meta")
    block = tower.blocks[0]
    dim = config.dim
    x = torch.empty(1, tokens, dim, dtype=torch.bfloat16, device="meta", requires_grad=True)
    kv = tuple(torch.empty(1, text_len, dim, dtype=torch.bfloat16, device="meta") for _ in range(2))
    t_mod = torch.empty(1, 6, dim, dtype=torch.bfloat16, device="meta")
    freqs = torch.empty(tokens, 1, config.dim // config.num_heads // 2, dtype=torch.complex64, device="meta")
    grad = torch.empty_like(x)
    sdpa, F.scaled_dot_product_attention = F.scaled_dot_product_attention, _flash_attention
    try:
        with applied(SimpleNamespace(video_dit=tower, video_dit_2=None, audio_dit=None, bridge=None), adapter), \
                _LiveBytes("meta") as counter:
            block(x, kv, t_mod, freqs).backward(grad)
    finally:
        F.scaled_dot_product_attention = sdpa
    return counter.peak


def estimate() -> None:
    """The release-size arithmetic (bf16 weights, as MOVA_TRAINER_DTYPE on CUDA)."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    from movakit.models.audio_vae import DacVAE, DacVAEConfig

    with torch.device("meta"):
        expert = VideoDiT(VideoDiTConfig.from_dict(release_config("video_dit")))
        audio = AudioDiT(AudioDiTConfig.from_dict(release_config("audio_dit")))
        bridge = DualTowerBridge(BridgeConfig.from_dict(release_config("dual_tower_bridge")))
        text = UMT5EncoderModel(UMT5Config.from_dict(release_config("text_encoder")))
        vae = AutoencoderKLWan.from_config({k: v for k, v in release_config("video_vae").items()
                                            if not k.startswith("_")})
        dac = DacVAE(DacVAEConfig.from_dict(release_config("audio_vae")))
    counts = {"video expert (each)": _count(expert), "audio_dit": _count(audio), "bridge": _count(bridge),
              "text encoder": _count(text), "video VAE": _count(vae), "audio VAE (float32)": _count(dac)}
    lora = sum(16 * (layer.in_features + layer.out_features) for layer in target_layers(
        {"video_dit": expert, "video_dit_2": expert, "audio_dit": audio, "dual_tower_bridge": bridge},
        "accelerate").values())
    vc, ac = expert.config, audio.config
    t_lat = (RELEASE_FRAMES - 1) // 4 + 1
    v_tokens = t_lat * (RELEASE_HEIGHT // 8 // vc.patch_size[1]) * (RELEASE_WIDTH // 8 // vc.patch_size[2])
    a_tokens = audio_latent_length(SAMPLE_RATE, HOP, RELEASE_FRAMES, 24.0)
    v_input, a_input = v_tokens * vc.dim * 2, a_tokens * ac.dim * 2  # one block input, bf16
    shared = min(vc.num_layers, ac.num_layers)
    # checkpointing keeps each call's inputs: bridge i (video + audio), video block i, audio block i
    kept = shared * (2 * v_input + 2 * a_input) + (vc.num_layers - shared) * v_input
    block = traced_block_bytes(vc, v_tokens)  # one video block's forward + backward (the recompute)
    weights_bf16 = {name: n * (4 if "float32" in name else 2) for name, n in counts.items()}
    lora_bytes = lora * 16  # float32 param + grad + AdamW exp_avg + exp_avg_sq
    trained = weights_bf16["audio_dit"] + weights_bf16["bridge"]
    expert_bytes = weights_bf16["video expert (each)"]
    encoders = weights_bf16["text encoder"] + weights_bf16["video VAE"] + weights_bf16["audio VAE (float32)"]
    # offload "blocks": on the device only what lies outside the streamed blocks, plus the largest call's blocks
    # (a video block, or one layer's two bridge blocks), that call's inputs back from host RAM and its output's
    # gradient; the text keys and values of every block live through the forward
    units = {name: [_count(m) * 2 for _n, m in stream_units(name, module)]
             for name, module in (("video_dit", expert), ("audio_dit", audio), ("bridge", bridge))}
    # host_weights "float8": the blocks' matrices at 1 byte a parameter instead of 2
    matrices = {name: sum(p.numel() for _n, m in stream_units(name, module) for p in m.parameters() if p.ndim >= 2)
                for name, module in (("video_dit", expert), ("audio_dit", audio), ("bridge", bridge))}
    float8_saving = 2 * matrices["video_dit"] + matrices["audio_dit"] + matrices["bridge"]
    outside = expert_bytes - sum(units["video_dit"]) + weights_bf16["audio_dit"] - sum(units["audio_dit"])
    largest_call = max(max(units["video_dit"]), 2 * max(units["bridge"]))
    text_kv = (vc.num_layers * vc.dim + ac.num_layers * ac.dim) * 2 * TEXT_LEN * 2
    streamed = outside + largest_call + lora_bytes + block + 2 * v_input + text_kv
    print("\nrelease-size estimate (bf16 weights; parameters counted from the release configs on the meta device)")
    for name, n in counts.items():
        print(f"  {name:22s} {n / 1e9:7.3f} B params  {weights_bf16[name] / GB:6.1f} GB")
    print(f"  LoRA r16 (accelerate) {lora / 1e6:7.1f} M params  {lora_bytes / GB:6.1f} GB with fp32 grads and AdamW")
    print(f"  clip {RELEASE_FRAMES}x{RELEASE_HEIGHT}x{RELEASE_WIDTH}: {v_tokens} video tokens, {a_tokens} audio; "
          f"block input {v_input / GB:.2f} GB; inputs kept by checkpointing {kept / GB:.1f} GB; "
          f"one video block's forward + backward {block / GB:.2f} GB (traced)")
    print(f"  offload blocks: outside the blocks {outside / GB:.2f} GB; largest call's blocks "
          f"{largest_call / GB:.2f} GB; every block's text keys and values {text_kv / GB:.2f} GB")
    plans = {
        "none (checkpointing)": (2 * expert_bytes + trained + encoders + lora_bytes + kept + block, 0),
        "model": (expert_bytes + trained + lora_bytes + kept + block, expert_bytes + encoders),
        "model-and-activations": (expert_bytes + trained + lora_bytes + block, expert_bytes + encoders + kept),
        "blocks": (streamed, 2 * expert_bytes + trained + encoders + kept),
        "blocks, float8 host weights": (streamed, 2 * expert_bytes + trained + encoders + kept - float8_saving),
    }
    print(f"  {'offload plan':30s} {'GPU GB':>7s} {'host GB':>8s}  fits {BUDGET_GB:.0f} GB?")
    for name, (gpu, host) in plans.items():
        print(f"  {name:30s} {gpu / GB:7.1f} {host / GB:8.1f}  {'yes' if gpu / GB <= BUDGET_GB else 'no'}")
    print("  (what PyTorch allocates; the CUDA context and the caching allocator's slack come on top, ~1-3 GB)")
    print(f"  encoding the clips (before the steps, encoders only): {encoders / GB:.1f} GB of weights")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=tuple(CONFIGS), default="small")
    parser.add_argument("--tiny", action="store_const", const="tiny", dest="config")
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=tuple(PLANS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    measure(args)
    estimate()


if __name__ == "__main__":
    main()
