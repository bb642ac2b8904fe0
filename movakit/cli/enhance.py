"""`mova enhance "prompt" [--image FILE]`: print the prompt MOVA would actually be given."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from movakit.cli import UsageError
from movakit.enhance.first_frame import FirstFrameError
from movakit.enhance.settings import BACKENDS, EnhancerSettings


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "enhance",
        help="rewrite a prompt into MOVA's caption style",
        description="Rewrite a prompt into the long, structured caption style MOVA was trained on. The backend "
        "comes from MOVA_ENHANCER_* variables (default: the rule-based rewrite, no model needed).",
    )
    p.add_argument("prompt", help="the user's prompt; put speech in double quotes")
    p.add_argument("--image", type=Path, help="first frame (PNG/JPEG/WebP); described by the vision model if any")
    p.add_argument("--backend", choices=BACKENDS, help="override MOVA_ENHANCER_BACKEND")
    p.add_argument("--off", action="store_true", help="turn enhancement off: print the prompt as given")
    p.add_argument("--json", action="store_true", help="print the whole result (backend, events, ...) as JSON")
    p.add_argument(
        "--first-frame",
        type=Path,
        metavar="OUT",
        help="also draw a first frame with the MOVA_FIRST_FRAME_* endpoint or local model and write it to OUT",
    )
    p.add_argument("--height", type=int, default=352, help="first-frame height for --first-frame (default 352)")
    p.add_argument("--width", type=int, default=640, help="first-frame width for --first-frame (default 640)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from movakit.stages.enhance import EnhanceRequest, build_enhancer, enhance, generate_first_frame

    try:
        settings = EnhancerSettings.from_env()
        if args.backend is not None:
            settings = dataclasses.replace(settings, backend=args.backend)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    image = None
    if args.image is not None:
        if not args.image.is_file():
            raise UsageError(f"--image: {args.image} is not a file")
        image = args.image.read_bytes()
    if args.first_frame is not None and not settings.first_frame.configured:
        raise UsageError("--first-frame: neither MOVA_FIRST_FRAME_BASE_URL nor MOVA_FIRST_FRAME_MODEL_PATH is set")
    for name, value in (("--height", args.height), ("--width", args.width)):
        if value <= 0:
            raise UsageError(f"{name}: must be positive, got {value}")
    try:
        enhancer = build_enhancer(settings)
        result = enhance(enhancer, EnhanceRequest(prompt=args.prompt, image=image, enabled=not args.off))
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    if args.first_frame is not None:
        try:
            frame = generate_first_frame(settings, result.prompt, args.height, args.width)
        except (FirstFrameError, ValueError) as exc:
            print(f"mova: {exc}", file=sys.stderr)
            return 1
        if frame is not None:
            args.first_frame.write_bytes(frame)
            print(f"first frame written to {args.first_frame}", file=sys.stderr)

    if args.json:
        print(json.dumps(dataclasses.asdict(result), ensure_ascii=False, indent=2))
        return 0
    print(result.prompt)
    for event in result.events:
        print(f"[{result.backend}] {event}", file=sys.stderr)
    return 0
