"""The request options of `mova generate` and `mova submit`: one table (OPTIONS) of the GenerationRequest fields
as command-line options, with the limits and defaults of movakit/request.py in their help."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from movakit.request import (
    DEFAULT_FPS, DEFAULT_GUIDANCE, DEFAULT_LORA_SCALE, DURATION, FPS, FRAMES, GENERATE_SEED, GUIDANCE,
    LORA_NAME_RULE, LORA_SCALE_MAX, MAX_PROMPT_CHARS, PRIORITY, REAL_PRESET, SEED, SIDE, STEP_CACHE, STEPS,
    SYNC_GUIDANCE, TINY_PRESET, GenerationRequest, InvalidArgument, check_field,
)


@dataclass(frozen=True)
class Option:
    field: str  # GenerationRequest field; "image" is the first-frame image file
    flag: str
    type: Callable[[str], Any] | None  # None: an on/off flag (--x / --no-x)
    help: str
    repeated: bool = False  # given once per value (a tuple field)


_P, _T = REAL_PRESET, TINY_PRESET
OPTIONS: tuple[Option, ...] = (
    Option("prompt", "--prompt", str, "what happens and what is heard (speech in quotes); used verbatim unless "
           f"--enhance; 1..{MAX_PROMPT_CHARS} characters with visible text"),
    Option("image", "--image", str, "first-frame image (PNG, JPEG or WebP); without it a white frame is used, or "
           "the frame of the image endpoint or local text-to-image model MOVA_FIRST_FRAME_* names"),
    Option("negative_prompt", "--negative-prompt", str, "what guidance steers away from; empty or unset = the "
           f"official negative prompt; at most {MAX_PROMPT_CHARS} characters"),
    Option("height", "--height", int, f"pixels, a multiple of the checkpoint's size step (16), {SIDE[0]}..{SIDE[1]}; "
           f"default {_P.height} ({_T.height} on the tiny demo checkpoint); released checkpoints take "
           "352x640, 640x352, 720x1280 or 1280x720 (height x width)"),
    Option("width", "--width", int, f"pixels, like --height; default {_P.width} ({_T.width} on the tiny demo "
           "checkpoint)"),
    Option("num_frames", "--num-frames", int, f"frames, N = 4k+1 (e.g. 17, 97, 193), {FRAMES[0]}..{FRAMES[1]}; "
           f"default {_P.num_frames} ({_T.num_frames} on the tiny demo checkpoint)"),
    Option("fps", "--fps", float, f"frames per second, {FPS[0]:g}..{FPS[1]:g}; default {DEFAULT_FPS:g}; also sets "
           "the audio length"),
    Option("num_inference_steps", "--steps", int, f"denoising steps, {STEPS[0]}..{STEPS[1]}; default "
           f"{_P.num_inference_steps} ({_T.num_inference_steps} on the tiny demo checkpoint)"),
    Option("guidance_scale", "--guidance-scale", float, f"classifier-free guidance scale on video and audio, "
           f"{GUIDANCE[0]:g}..{GUIDANCE[1]:g} (1 = off); default {DEFAULT_GUIDANCE:g}"),
    Option("seed", "--seed", int, f"seed of the initial noise, {SEED[0]}..2^63-1; default: `mova generate` "
           f"{GENERATE_SEED}, `mova submit` one drawn by the gateway and recorded on the job"),
    Option("enhance_prompt", "--enhance", None, "rewrite the prompt with the prompt enhancer first (default off: "
           "the prompt is used verbatim, exact to the official pipeline)"),
    Option("lora_name", "--lora", str, f"LoRA adapter: a name in the adapter registry ({LORA_NAME_RULE}; "
           "`mova adapters list`)"),
    Option("lora_scale", "--lora-scale", float, f"LoRA strength in (0, {LORA_SCALE_MAX:g}]; default "
           f"{DEFAULT_LORA_SCALE:g}; needs --lora"),
    Option("priority", "--priority", int, f"scheduling priority {PRIORITY[0]} (lowest, default) .. {PRIORITY[1]}; "
           "`mova generate` runs at once and ignores it"),
    Option("sync_guidance_scale", "--sync-guidance-scale", float, "dual guidance: guidance on the audio-video "
           f"bridge (bridge on vs off) next to --guidance-scale on the text, {SYNC_GUIDANCE[0]:g}.."
           f"{SYNC_GUIDANCE[1]:g}; three forwards a step; unset (default) = the released single text CFG "
           "(docs/dual-guidance.md)"),
    Option("duration_s", "--duration", float, f"seconds of video, {DURATION[0]:g}..{DURATION[1]:g}; longer than "
           "one clip (--num-frames at --fps) makes a long video of clips generated one after another, each "
           "starting from the last frame of the one before, joined into one MP4 (docs/long-videos.md); default 0 = one "
           "clip"),
    Option("audio_guidance_scale", "--audio-guidance-scale", float, "per-modality guidance: --guidance-scale for "
           f"the audio velocity only, {GUIDANCE[0]:g}..{GUIDANCE[1]:g}; default: --guidance-scale "
           "(docs/dual-guidance.md)"),
    Option("audio_sync_guidance_scale", "--audio-sync-guidance-scale", float, "per-modality dual guidance: "
           f"--sync-guidance-scale for the audio velocity only, {SYNC_GUIDANCE[0]:g}..{SYNC_GUIDANCE[1]:g}; needs "
           "--sync-guidance-scale; default: --sync-guidance-scale"),
    Option("shots", "--shot", str, "a long video's shot list: give once per segment after the first, in order "
           "(segment 0 uses --prompt; later segments repeat the last shot); each like --prompt, used verbatim",
           repeated=True),
    Option("step_cache", "--step-cache", float, f"step caching: skip the denoiser's blocks at a step whose input "
           f"changed less than this threshold (accumulated relative change) and reuse their last residual, in "
           f"({STEP_CACHE[0]:g}, {STEP_CACHE[1]:g}]; faster, and the outputs drift from the sampler's "
           "(docs/performance.md#step-caching); unset (default) = off"),
)
_ERROR_NAMES = {"lora_name": "lora.name", "lora_scale": "lora.scale"}  # field -> its name in GenerationParams
FLAGS = {_ERROR_NAMES.get(o.field, o.field): o.flag for o in OPTIONS}  # name in errors -> option


def add_options(parser) -> None:
    """The request options (OPTIONS) on an argparse parser; every one defaults to None (= the contract's default)."""
    import argparse

    for o in OPTIONS:
        if o.repeated:
            parser.add_argument(o.flag, dest=o.field, action="append", type=o.type, default=None,
                                metavar=o.flag.lstrip("-").upper(), help=o.help)
        elif o.type is None:
            parser.add_argument(o.flag, dest=o.field, action=argparse.BooleanOptionalAction, default=False,
                                help=o.help)
        else:
            parser.add_argument(o.flag, dest=o.field, type=o.type, default=None, required=o.field == "prompt",
                                metavar=o.flag.lstrip("-").replace("-", "_").upper(), help=o.help)


def from_options(args) -> GenerationRequest:
    """The GenerationRequest of parsed options (add_options), each given one checked against its limits;
    raises InvalidArgument naming the option (e.g. `--steps`) with the contract's reason."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(GenerationRequest)}
    values["lora_name"] = values["lora_name"] or ""
    values["priority"] = values["priority"] if values["priority"] is not None else 0
    values["duration_s"] = values["duration_s"] if values["duration_s"] is not None else 0.0
    values["shots"] = tuple(values["shots"] or ())
    req = GenerationRequest(**values)
    try:
        for f in dataclasses.fields(req):
            check_field(req, f.name)
    except InvalidArgument as exc:
        raise InvalidArgument(FLAGS[exc.field], exc.reason) from None
    return req
