"""Seconds to load a video DiT folder with movakit against memory-mapping the same file, measured in one run.

Writes a random bf16 video DiT checkpoint at release widths into a temporary folder (0.7 GB a block plus 0.47 GB
of embeddings and head: the default 5 blocks make about 4 GB, the size of the medium checkpoint), then times,
alternating: `safetensors.torch.load_file` (memory-mapped, no module: the floor), movakit's `load_video_dit`
(module built on the meta device, strict load) and the meta build alone. The file stays in the page cache between
runs, as on a warm loading host.

    .venv/bin/python bench/bench_loading.py                 # 5 blocks, about 4 GB on disk (temporary)
    .venv/bin/python bench/bench_loading.py --layers 1      # smoke run, about 1.2 GB

Prints ratios only; no assertion on speed anywhere.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from movakit.loading.components import load_video_dit
from movakit.loading.release_configs import release_config
from movakit.loading.strict import build_on_meta
from movakit.models.video_dit import VideoDiT, VideoDiTConfig

FILE = "diffusion_pytorch_model.safetensors"


def write_checkpoint(folder: Path, layers: int) -> dict:
    """Write a random bf16 video DiT at release widths with `layers` blocks; returns its config."""
    config = {**release_config("video_dit"), "num_layers": layers}
    model = build_on_meta(lambda: VideoDiT(VideoDiTConfig.from_dict(config)))
    gen = torch.Generator().manual_seed(0)
    tensors = {key: (torch.randn(meta.shape, generator=gen) * 0.02).to(torch.bfloat16)
               for key, meta in model.state_dict().items()}
    save_file(tensors, str(folder / FILE))
    (folder / "config.json").write_text(json.dumps(config))
    return config


def timed(fn) -> float:
    t0 = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - t0
    del result
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=5, help="video DiT blocks (5: about 4 GB)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mova-bench-load-") as tmp:
        folder = Path(tmp)
        config = write_checkpoint(folder, args.layers)
        size = (folder / FILE).stat().st_size
        cfg = VideoDiTConfig.from_dict(config)
        runs = {
            "safetensors load_file (mmap)": lambda: load_file(str(folder / FILE)),
            "movakit load_video_dit": lambda: load_video_dit(folder, dtype=torch.bfloat16),
            "meta build alone": lambda: build_on_meta(lambda: VideoDiT(cfg)),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn))
    print(f"video DiT, {args.layers} layers at release widths, bf16, {size / 1e9:.2f} GB, {args.repeats} runs each")
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name}: median {med[name]:.3f} s, min {min(t):.3f} s")
    floor = med["safetensors load_file (mmap)"]
    print(f"ratio movakit / mmap floor: {med['movakit load_video_dit'] / floor:.2f}; "
          f"meta build share of the movakit load: {med['meta build alone'] / med['movakit load_video_dit']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
