"""`mova tiny-checkpoint DIR`: write a tiny MOVA checkpoint with random weights (official layout)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from movakit.cli import UsageError

_DTYPES = ("float32", "bfloat16", "float16")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tiny-checkpoint",
        help="write a tiny random-weight MOVA checkpoint (for tests and demos; its outputs are noise)",
        description="Write a tiny MOVA checkpoint with RANDOM weights in the official folder layout.",
    )
    parser.add_argument("dir", type=Path, help="output folder (must not exist, or be empty)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    parser.add_argument("--dtype", choices=_DTYPES, default="float32", help="stored dtype (default float32)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from movakit.loading.demo import write_tiny_checkpoint

    if args.seed < 0:
        raise UsageError(f"--seed: must be >= 0, got {args.seed}")
    target: Path = args.dir
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"dir: {target} exists and is not an empty folder")
    path = write_tiny_checkpoint(target, seed=args.seed, dtype=getattr(torch, args.dtype))
    print(f"wrote tiny MOVA checkpoint to {path}")
    print("WARNING: the weights are random; anything generated with this checkpoint is noise.", file=sys.stderr)
    return 0
