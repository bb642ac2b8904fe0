"""`mova generate`: prompt (+ optional first-frame image) -> MP4 with sound, WAV and PNG, in one process (or, with
--context-parallel N under torchrun, N processes splitting every denoise forward; rank 0 writes the files).

Every option is checked before any model is loaded; a bad one exits with status 2 and a message naming it.
Without --checkpoint it runs on the tiny random demo checkpoint (created once and cached) with small defaults,
and says loudly that the output is noise.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from movakit import request as contract
from movakit.cli import UsageError, request_options
from movakit.cli.jobs import DEFAULT_GATEWAY, DEFAULT_STATE_DIR, TOKEN_ENV
from movakit.execution import cfg_batch_for, compile_denoiser, default_dtype

DEFAULT_OUTPUT = "out/mova.mp4"
# The adapter name a request carries when --lora names a folder or file on disk (it is read from there).
LOCAL_ADAPTER = "local-file"
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

    request: contract.GenerationRequest  # not resolved yet: size, frames and steps depend on the checkpoint
    image: Path | None
    checkpoint: Path | None
    device: str
    dtype: str
    output: Path
    save_latents: Path | None
    offload: bool
    cfg_batch: bool
    context_parallel: int  # processes splitting each forward (docs/parallel.md); 1 = this process alone
    compile: bool  # torch.compile the denoiser's blocks (movakit.execution.compile_denoiser)
    lora_path: Path | None  # --lora named an adapter on disk; else request.lora_name is a registry name
    merge_lora: bool
    lora_gateway: str


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate a video with sound from a prompt (and an optional first-frame image)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    request_options.add_options(p)  # the request options, the same as `mova submit`'s
    p.add_argument("--checkpoint", help="MOVA checkpoint folder (model_index.json); default: the tiny demo one")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                   help="model dtype (default: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--output", default=DEFAULT_OUTPUT, help=f"MP4 path; the .wav and .png go beside it ({DEFAULT_OUTPUT})")
    p.add_argument("--save-latents", help="also save the final latents (safetensors: video, audio)")
    p.add_argument("--offload", action="store_true",
                   help="keep components on the CPU and move each to the device only while it runs")
    p.add_argument("--cfg-batch", action=argparse.BooleanOptionalAction, default=None,
                   help="run the two guidance branches as one batch-2 forward; default: on for CUDA, off on the "
                        "CPU, as the denoiser service decides (docs/stack.md: it changes speed and memory, and "
                        "the latents by kernel rounding only)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the denoiser's blocks (default off; the first step of a new size compiles, "
                        "minutes on a CPU; values change by rounding only: docs/performance.md)")
    p.add_argument("--context-parallel", type=int, default=1, metavar="N",
                   help="split every denoise forward over N processes, one per device (docs/parallel.md); launch "
                        "them with torchrun: torchrun --nproc-per-node N .venv/bin/mova generate --context-parallel N ...")
    p.add_argument("--merge-lora", action="store_true",
                   help="merge the --lora adapter into the weights before sampling (default: applied unmerged)")
    p.add_argument("--lora-gateway", default=DEFAULT_GATEWAY,
                   help=f"gateway host:port whose adapter registry a --lora NAME is read from, as the tenant of "
                        f"${TOKEN_ENV} (else of {DEFAULT_STATE_DIR}/token) (mova generate also "
                        f"takes --lora PATH: a folder or lora_weights.pt in an official format or ours; default "
                        f"{DEFAULT_GATEWAY})")
    p.set_defaults(func=run)


def validate(args: argparse.Namespace, *, cuda_count: int | None = None) -> GenerateArgs:
    """Check every option; raise UsageError naming the first bad one. Loads no model."""
    lora_path = None
    if args.lora_name and Path(args.lora_name).exists():  # an adapter on disk rather than a registry name
        lora_path = Path(args.lora_name)
        args = argparse.Namespace(**{**vars(args), "lora_name": LOCAL_ADAPTER})
    try:
        req = request_options.from_options(args)
    except contract.InvalidArgument as exc:
        raise UsageError(str(exc)) from None
    if req.seed is None:
        req = dataclasses.replace(req, seed=contract.GENERATE_SEED)
    if args.merge_lora and not req.lora_name:
        raise UsageError("--merge-lora: needs --lora")

    image = None
    if args.image is not None:
        image = Path(args.image)
        if not image.is_file():
            raise UsageError(f"--image: no such file: {image}")
        try:
            contract.validate_image(image.read_bytes(), field="--image")
        except contract.InvalidArgument as exc:
            raise UsageError(str(exc)) from None

    checkpoint = None
    if args.checkpoint is not None:
        checkpoint = Path(args.checkpoint)
        if not (checkpoint / "model_index.json").is_file():
            raise UsageError(f"--checkpoint: {checkpoint} is not a MOVA checkpoint folder (no model_index.json)")

    if cuda_count is None:
        import torch

        cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    parallel = args.context_parallel
    if parallel < 1:
        raise UsageError(f"--context-parallel: must be >= 1, got {parallel}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if parallel > 1 and world != parallel:
        raise UsageError(f"--context-parallel: {parallel} processes are needed, this is {world}; launch with "
                         f"torchrun --nproc-per-node {parallel} .venv/bin/mova generate --context-parallel {parallel} ...")
    device = args.device if args.device is not None else ("cuda" if cuda_count else "cpu")
    if parallel > 1 and device == "cuda":  # one device per process
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    if not _DEVICE_RE.match(device):
        raise UsageError(f"--device: expected cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= cuda_count:
            raise UsageError(f"--device: {device} is not available (CUDA devices here: {cuda_count})")
    dtype = args.dtype if args.dtype is not None else default_dtype(device)
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

    return GenerateArgs(
        request=req, image=image, checkpoint=checkpoint, device=device, dtype=dtype, output=output,
        save_latents=save_latents, offload=args.offload,
        cfg_batch=args.cfg_batch if args.cfg_batch is not None else cfg_batch_for(device),
        context_parallel=parallel, compile=args.compile,
        lora_path=lora_path, merge_lora=args.merge_lora, lora_gateway=args.lora_gateway,
    )


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _read_lora(opts: GenerateArgs, req: contract.GenerationRequest):
    """The adapter of --lora (read before the models load, so a bad file is reported at once), or None."""
    if not req.lora_name:
        return None
    from movakit.cli.adapters import fetch, read_local
    from movakit.cli.jobs import read_token

    if opts.lora_path is not None:
        adapter = read_local(opts.lora_path)
    else:  # the caller's tenant's adapter: the token as the job commands read it
        adapter = fetch(opts.lora_gateway, req.lora_name, read_token(DEFAULT_STATE_DIR))
    for note in adapter.notes:
        _say(f"note: {note}")
    return adapter


def _lora(opts: GenerateArgs, req: contract.GenerationRequest, adapter, models):
    """The context the pipeline runs in: nothing, the adapter unmerged, or (merged now) nothing. Every check of the
    adapter against the loaded models happens here, before any denoising."""
    from contextlib import nullcontext

    if adapter is None:
        return nullcontext()
    from movakit.lora.adapter import AdapterError, use

    try:
        context = use(models, adapter, req.lora_scale, merge=opts.merge_lora)
    except AdapterError as exc:
        raise UsageError(f"--lora: {exc}") from None
    _say(f"LoRA {opts.lora_path or req.lora_name}: rank {adapter.rank}, alpha {adapter.alpha:g}, "
         f"{len(adapter.layers)} layers, scale {req.lora_scale:g}, {'merged' if opts.merge_lora else 'unmerged'}")
    return context


def run(args: argparse.Namespace) -> int:
    opts = validate(args)
    if opts.context_parallel == 1:
        return _run(opts)
    import torch.distributed as dist

    dist.init_process_group("nccl" if opts.device.startswith("cuda") else "gloo")
    try:
        if dist.get_rank() == 0:
            return _run(opts)
        with tempfile.TemporaryDirectory(prefix="mova-rank-") as folder:  # the same bytes; rank 0 writes them
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                return _run(dataclasses.replace(opts, output=Path(folder) / "out.mp4", save_latents=None))
    finally:
        dist.destroy_process_group()


def _run(opts: GenerateArgs) -> int:

    import torch

    from movakit.loading import CheckpointError, MovaCheckpoint
    from movakit.enhance.first_frame import draw_first_frame_or_none
    from movakit.model_rules import ModelRules, RulesError
    from movakit.long_video import generate_long, segment_plan, segment_seed
    from movakit.pipeline import RunOptions, generate
    from movakit.stages.enhance import EnhancerSettings, build_enhancer

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
    try:
        rules = ModelRules.from_checkpoint(path)
    except RulesError as exc:
        raise UsageError(f"--checkpoint: {exc}") from None
    try:
        req = contract.validate(contract.resolve(opts.request, rules), rules)
    except contract.InvalidArgument as exc:
        raise UsageError(f"{request_options.FLAGS[exc.field]}: {exc.reason}") from None
    steps = req.num_inference_steps
    plan = segment_plan(req)
    if plan is not None and opts.save_latents is not None:
        raise UsageError("--save-latents: saves one clip's latents; not available with a --duration of more "
                         "than one clip")
    _say(
        f"mova generate: {req.width}x{req.height}, {req.num_frames} frames at {req.fps:g} fps, {steps} steps, "
        f"{contract.guidance_summary(req)}, seed {req.seed}, device {opts.device}, {opts.dtype}"
        + (f", step cache {req.step_cache:g} (outputs drift)" if req.step_cache is not None else "")
        + (", offload" if opts.offload else "") + (", compiled blocks" if opts.compile else "")
    )
    if plan is not None:
        _say(f"long video: {plan.count} segments of {plan.clip_frames} frames (seeds {req.seed}.."
             f"{segment_seed(req.seed, plan.count - 1)}), {plan.total_frames} frames = {plan.duration_s:.2f} s"
             + (f", a shot list of {len(req.shots)}" if req.shots else ""))

    try:
        enhancer = build_enhancer(enhancer_settings) if req.enhance_prompt else None
    except ValueError as exc:  # e.g. MOVA_ENHANCER_MODEL_PATH without a config.json
        raise UsageError(f"--enhance: {exc}") from None
    image = opts.image.read_bytes() if opts.image is not None else None
    # Text-only: the spec's white frame, unless MOVA_FIRST_FRAME_BASE_URL names an image-generation endpoint or
    # MOVA_FIRST_FRAME_MODEL_PATH a local text-to-image folder.
    first_frame_notes: list[str] = []
    draw = None
    if image is None and enhancer_settings.first_frame.configured:
        def draw(prompt: str, height: int, width: int) -> bytes | None:
            return draw_first_frame_or_none(enhancer_settings, prompt, height, width, first_frame_notes,
                                            seed=req.seed)

        _say(f"first frame: drawn by {enhancer_settings.first_frame.describe_source()} (white frame if that fails)")
    adapter = _read_lora(opts, req)
    load_device = "cpu" if opts.offload else opts.device
    _say(f"loading {path} ...")
    try:
        models = ckpt.load(device=load_device, dtype=getattr(torch, opts.dtype))
    except (CheckpointError, NotImplementedError) as exc:  # missing/mis-shaped tensors, unsupported config values
        raise UsageError(f"--checkpoint: {exc}") from None
    if opts.compile:
        compile_denoiser(models)
    lora = _lora(opts, req, adapter, models)

    common = RunOptions(rules=rules, image=image, enhancer=enhancer, cfg_batch=opts.cfg_batch, offload=opts.offload,
                        device=opts.device, draw_first_frame=draw)
    from movakit.parallel import sequence_parallel

    with sequence_parallel() if opts.context_parallel > 1 else contextlib.nullcontext(), lora:
        if plan is not None:
            result = _generate_long(generate_long, models, req, opts.output, plan, steps, common)
        else:
            result = _generate_clip(generate, models, req, opts.output, steps, common, opts.save_latents)
    for note in (*result.enhance_events, *first_frame_notes):
        _say(f"note: {note}")
    print(f"prompt used ({result.enhance_backend}): {result.prompt_used}")
    if plan is None:
        t = result.times
        _say(f"times: encode {t.encode_s:.1f}s, denoise {t.denoise_s:.1f}s, decode {t.decode_s:.1f}s, "
             f"write {t.write_s:.1f}s")
    else:
        _say(f"times: denoise {result.denoise_s:.1f}s over {plan.count} segments")
    print(f"video: {result.mp4}")
    print(f"audio: {result.wav}")
    print(f"preview: {result.png}")
    if opts.save_latents is not None:
        print(f"latents: {opts.save_latents}")
    if tiny:
        _say("(random weights: the output above is noise)")
    return 0


def _generate_clip(generate, models, req, output, steps, common, latents_path):
    """One clip; the progress bar starts with the denoise stage, so its rate and ETA count denoise steps only."""
    from tqdm import tqdm

    bars = []

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

    try:
        return generate(models, req, output, dataclasses.replace(common, on_step=on_step, on_stage=on_stage),
                        latents_path=latents_path)
    finally:
        for bar in bars:
            bar.close()


def _generate_long(generate_long, models, req, output, plan, steps, common):
    """Every segment under one progress bar over the steps of all segments: its ETA counts the whole video (the
    rate includes each segment's encode and decode)."""
    from tqdm import tqdm

    bar = tqdm(total=steps * plan.count, desc="segment 1", unit="step", file=sys.stderr)
    segment = [0]

    def on_segment(k: int, count: int) -> None:
        segment[0] = k

    def on_stage(name: str) -> None:
        bar.set_description(f"segment {segment[0] + 1}/{plan.count} {name}")

    def on_step(info) -> None:
        bar.update(1)
        bar.set_postfix_str(info.expert)

    try:
        return generate_long(models, req, output, dataclasses.replace(common, on_step=on_step, on_stage=on_stage),
                             on_segment=on_segment)
    finally:
        bar.close()
