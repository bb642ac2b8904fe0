"""`mova generate`: prompt (+ optional first-frame image) -> MP4 with sound, WAV and PNG, in one process.

Every option is checked before any model is loaded; a bad one exits with status 2 and a message naming it.
Without --checkpoint it runs on the tiny random demo checkpoint (created once and cached) with small defaults,
and says loudly that the output is noise.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from movakit.cli import UsageError

# Real checkpoints: the official inference defaults for MOVA-360p (MOVA-SPEC §4.1).
REAL_DEFAULTS = {"height": 352, "width": 640, "num_frames": 193, "steps": 50}
# The tiny demo checkpoint: small enough that a first run ends in seconds on 2 CPU cores.
TINY_DEFAULTS = {"height": 64, "width": 96, "num_frames": 17, "steps": 10}
DEFAULT_OUTPUT = "out/mova.mp4"
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")

RANDOM_WEIGHTS_WARNING = """\
================================================================================
WARNING: {what} has RANDOM weights. The MP4 will be noise (video and audio).
It only shows that the pipeline runs end to end. For real results download
MOVA-360p or MOVA-720p (Hugging Face: OpenMOSS-Team/MOVA-360p, OpenMOSS-Team/MOVA-720p)
and run:  mova generate --checkpoint /path/to/MOVA-360p --device cuda --prompt "..."
================================================================================"""


@dataclass(frozen=True)
class GenerateArgs:
    """The validated options (nothing here has touched a model yet)."""

    prompt: str
    image: Path | None
    negative_prompt: str
    height: int | None  # None: the checkpoint-dependent default
    width: int | None
    num_frames: int | None
    fps: float
    steps: int | None
    guidance_scale: float
    seed: int
    checkpoint: Path | None
    device: str
    dtype: str
    output: Path
    save_latents: Path | None
    enhance: bool
    offload: bool
    cfg_batch: bool


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate a video with sound from a prompt (and an optional first-frame image)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--prompt", required=True, help="what happens, what is heard (speech in quotes)")
    p.add_argument("--image", help="first-frame image (PNG/JPEG); without it a white frame is used (spec §1.3)")
    p.add_argument("--negative-prompt", help="negative prompt for CFG (default: the official short Chinese one)")
    p.add_argument("--height", type=int, help="pixels, multiple of 16 (default 352; tiny demo: 64)")
    p.add_argument("--width", type=int, help="pixels, multiple of 16 (default 640; tiny demo: 96)")
    p.add_argument("--num-frames", type=int, help="N with N = 4k+1 (default 193; tiny demo: 17)")
    p.add_argument("--fps", type=float, default=24.0, help="frames per second (default 24); sets the audio length")
    p.add_argument("--steps", type=int, help="denoising steps (default 50; tiny demo: 10)")
    p.add_argument("--guidance-scale", type=float, default=5.0, help="CFG scale on video and audio (default 5.0)")
    p.add_argument("--seed", type=int, default=42, help="seed of the initial noise (CPU generator; default 42)")
    p.add_argument("--checkpoint", help="MOVA checkpoint folder (model_index.json); default: the tiny demo one")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                   help="model dtype (default: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help=f"MP4 path; the .wav and .png go beside it ({DEFAULT_OUTPUT})")
    p.add_argument("--save-latents", help="also save the final latents (safetensors: video, audio)")
    p.add_argument("--enhance", action=argparse.BooleanOptionalAction, default=False,
                   help="rewrite the prompt with the enhancer first (default off: exact to the official pipeline)")
    p.add_argument("--offload", action="store_true",
                   help="keep components on the CPU and move each to the device only while it runs")
    p.add_argument("--cfg-batch", action=argparse.BooleanOptionalAction, default=None,
                   help="run the positive and negative CFG branches as one batch-2 forward (default: on for CUDA, "
                        "where it is faster; off on the CPU, where two batch-1 forwards give latents bit-identical "
                        "to the official sampler)")
    p.set_defaults(func=run)


def validate(args: argparse.Namespace, *, cuda_count: int | None = None) -> GenerateArgs:
    """Check every option; raise UsageError naming the first bad one. Loads no model."""
    if not args.prompt.strip():
        raise UsageError("--prompt: must not be empty")
    for name, value in (("--height", args.height), ("--width", args.width)):
        if value is not None and (value <= 0 or value % 16):
            raise UsageError(f"{name}: must be a positive multiple of 16, got {value}")
    if args.num_frames is not None and (args.num_frames < 1 or args.num_frames % 4 != 1):
        raise UsageError(f"--num-frames: must be 4k+1 (e.g. 17, 97, 193), got {args.num_frames}")
    if not args.fps > 0 or args.fps > 240:
        raise UsageError(f"--fps: must be in (0, 240], got {args.fps}")
    if args.steps is not None and not 1 <= args.steps <= 1000:
        raise UsageError(f"--steps: must be in [1, 1000], got {args.steps}")
    if not args.guidance_scale > 0:
        raise UsageError(f"--guidance-scale: must be > 0, got {args.guidance_scale}")
    if not 0 <= args.seed < 2**63:
        raise UsageError(f"--seed: must be in [0, 2^63), got {args.seed}")

    image = None
    if args.image is not None:
        image = Path(args.image)
        if not image.is_file():
            raise UsageError(f"--image: no such file: {image}")
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(image) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError):
            raise UsageError(f"--image: not a readable image: {image}") from None

    checkpoint = None
    if args.checkpoint is not None:
        checkpoint = Path(args.checkpoint)
        if not (checkpoint / "model_index.json").is_file():
            raise UsageError(f"--checkpoint: {checkpoint} is not a MOVA checkpoint folder (no model_index.json)")

    if cuda_count is None:
        import torch

        cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = args.device if args.device is not None else ("cuda" if cuda_count else "cpu")
    if not _DEVICE_RE.match(device):
        raise UsageError(f"--device: expected cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= cuda_count:
            raise UsageError(f"--device: {device} is not available (CUDA devices here: {cuda_count})")
    dtype = args.dtype if args.dtype is not None else ("bfloat16" if device.startswith("cuda") else "float32")
    if args.offload and device == "cpu":
        raise UsageError("--offload: only meaningful with a CUDA --device (the models already live on the CPU)")

    output = Path(args.output)
    if output.suffix.lower() != ".mp4":
        raise UsageError(f"--output: must end in .mp4, got {output}")
    if output.exists() and output.is_dir():
        raise UsageError(f"--output: {output} is a directory")
    save_latents = None
    if args.save_latents is not None:
        save_latents = Path(args.save_latents)
        if save_latents.suffix != ".safetensors":
            raise UsageError(f"--save-latents: must end in .safetensors, got {save_latents}")

    if args.negative_prompt is None:
        from movakit.pipeline import OFFICIAL_NEGATIVE_PROMPT  # here: the pipeline imports torch

        negative_prompt = OFFICIAL_NEGATIVE_PROMPT
    else:
        negative_prompt = args.negative_prompt

    return GenerateArgs(
        prompt=args.prompt, image=image, negative_prompt=negative_prompt, height=args.height,
        width=args.width, num_frames=args.num_frames, fps=args.fps, steps=args.steps,
        guidance_scale=args.guidance_scale, seed=args.seed, checkpoint=checkpoint, device=device, dtype=dtype,
        output=output, save_latents=save_latents, enhance=args.enhance, offload=args.offload,
        cfg_batch=args.cfg_batch if args.cfg_batch is not None else device.startswith("cuda"),
    )


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    opts = validate(args)

    import torch
    from PIL import Image
    from tqdm import tqdm

    from movakit.loading import CheckpointError, MovaCheckpoint
    from movakit.enhance.first_frame import first_frame_source
    from movakit.pipeline import GenerateRequest, generate
    from movakit.stages.enhance import EnhancerSettings, build_enhancer
    from movakit.stages.first_frame import first_frame_for

    try:  # a bad MOVA_ENHANCER_* / MOVA_FIRST_FRAME_* variable is reported before any model work
        enhancer_settings = EnhancerSettings.from_env()
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    if opts.checkpoint is None:
        from movakit.loading.demo import default_demo_checkpoint

        path = default_demo_checkpoint()
        what = f"No --checkpoint given: the tiny demo checkpoint at {path}"
    else:
        path = opts.checkpoint
        what = f"The checkpoint {path}"
    try:
        ckpt = MovaCheckpoint(path)
    except CheckpointError as exc:
        raise UsageError(f"--checkpoint: {exc}") from None
    tiny = ckpt.random_weights
    if tiny:
        _say(RANDOM_WEIGHTS_WARNING.format(what=what))
    defaults = TINY_DEFAULTS if tiny else REAL_DEFAULTS
    height = opts.height if opts.height is not None else defaults["height"]
    width = opts.width if opts.width is not None else defaults["width"]
    num_frames = opts.num_frames if opts.num_frames is not None else defaults["num_frames"]
    steps = opts.steps if opts.steps is not None else defaults["steps"]
    _say(
        f"mova generate: {width}x{height}, {num_frames} frames at {opts.fps:g} fps, {steps} steps, "
        f"guidance {opts.guidance_scale:g}, seed {opts.seed}, device {opts.device}, {opts.dtype}"
        + (", offload" if opts.offload else "")
    )

    try:
        enhancer = build_enhancer(enhancer_settings) if opts.enhance else None
    except ValueError as exc:  # e.g. MOVA_ENHANCER_MODEL_PATH without a config.json
        raise UsageError(f"--enhance: {exc}") from None
    image = Image.open(opts.image).convert("RGB") if opts.image is not None else None
    # Text-only: the spec's white frame, unless MOVA_FIRST_FRAME_BASE_URL names an image-generation endpoint.
    first_frame_notes: list[str] = []
    first_frame = first_frame_for
    if image is None and enhancer_settings.first_frame.configured:
        first_frame = first_frame_source(enhancer_settings, events=first_frame_notes)
        _say(f"first frame: drawn by {enhancer_settings.first_frame.base_url} (white frame if that fails)")
    load_device = "cpu" if opts.offload else opts.device
    _say(f"loading {path} ...")
    try:
        models = ckpt.load(device=load_device, dtype=getattr(torch, opts.dtype))
    except (CheckpointError, NotImplementedError) as exc:  # missing/mis-shaped tensors, unsupported config values
        raise UsageError(f"--checkpoint: {exc}") from None

    bars = []  # the progress bar starts with the denoise stage, so its rate and ETA count denoise steps only

    def on_stage(name: str) -> None:
        while bars:
            bars.pop().close()
        if name == "denoise":
            bars.append(tqdm(total=steps, desc="denoise", unit="step", file=sys.stderr))
        else:
            _say(f"{name} ...")

    def on_step(info) -> None:
        bars[-1].update(1)
        bars[-1].set_postfix_str(info.expert)

    req = GenerateRequest(
        prompt=opts.prompt, image=image, negative_prompt=opts.negative_prompt, height=height, width=width,
        num_frames=num_frames, fps=opts.fps, num_inference_steps=steps, guidance_scale=opts.guidance_scale,
        seed=opts.seed,
    )
    try:
        result = generate(
            models, req, opts.output, enhancer=enhancer, on_step=on_step, cfg_batch=opts.cfg_batch,
            offload=opts.offload, device=opts.device, latents_path=opts.save_latents, on_stage=on_stage,
            first_frame=first_frame,
        )
    finally:
        for bar in bars:
            bar.close()
    for note in (*result.enhance_events, *first_frame_notes):
        _say(f"note: {note}")
    print(f"prompt used ({result.enhance_backend}): {result.prompt_used}")
    t = result.times
    _say(f"times: encode {t.encode_s:.1f}s, denoise {t.denoise_s:.1f}s, decode {t.decode_s:.1f}s, "
         f"write {t.write_s:.1f}s")
    print(f"video: {result.mp4}")
    print(f"audio: {result.wav}")
    print(f"preview: {result.png}")
    if opts.save_latents is not None:
        print(f"latents: {opts.save_latents}")
    if tiny:
        _say("(random weights: the output above is noise)")
    return 0
