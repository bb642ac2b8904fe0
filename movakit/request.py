"""One generation request: every field, its default, its limits, the presets, resolution and validation (no torch).

`mova generate`, `mova submit`, the gateway, the embedded pipeline (movakit/pipeline.py) and the stage services
all go through this module, so a request means the same thing everywhere and a bad field gets the same words
from every entry point: `InvalidArgument(field, reason)`, where `field` is the GenerationParams field name
(the gateway says `params.<field>`, the command line the option, e.g. `--steps`) and `reason` is the one text.
What the checkpoint decides (size step, frame rule, trained sizes, audio rate and hop) comes from ModelRules
(movakit/model_rules.py), read from the checkpoint's config files.

A request is built with None for "the default"; `resolve` fills every default (the checkpoint's preset for the
size, frames and steps; the official negative prompt for an empty one) and draws a seed when none is given.

Adding a field: add it to GenerationRequest (None = the default) and to OPTIONS in movakit/cli/request_options.py
(option name and help), fill its default in `resolve`, check it in `check_field`, and map it in `to_proto` /
`from_proto` (a new field of GenerationParams in proto/movakit/api/v1/common.proto, whose comment says the same
default and limits; an `optional` scalar there, whose unset means something, also goes into OPTIONAL_FIELDS).
"""

from __future__ import annotations

import dataclasses
import io
import random
import re
import unicodedata
import warnings
from dataclasses import dataclass

from movakit.model_rules import ModelRules
from movakit.segments import plan_segments

# The short negative prompt of the official MOVA inference script: used when a request gives none (or "").
OFFICIAL_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指"
)

# ---- limits (the same for every entry point) -----------------------------------------------------------------
MAX_PROMPT_CHARS = 2000
SIDE = (16, 1280)  # height and width, pixels
FRAMES = (5, 193)  # 193 frames = 8 s at 24 fps, the longest clip MOVA was trained on
FPS = (8.0, 60.0)
STEPS = (1, 100)
GUIDANCE = (1.0, 20.0)  # 1.0 turns classifier-free guidance off
SYNC_GUIDANCE = (0.0, 20.0)  # dual guidance's scale on the audio-video bridge (unset = single text CFG)
SEED = (0, 2**63 - 1)
PRIORITY = (0, 9)
DURATION = (0.0, 60.0)  # seconds of a long video (docs/long-videos.md); 0 = one clip of num_frames
STEP_CACHE = (0.0, 1.0)  # step-cache threshold in (0, 1] (movakit/models/step_cache.py); unset = off
LORA_SCALE_MAX = 2.0  # scale in (0, LORA_SCALE_MAX]
# An adapter name (params.lora.name, and adapters/<tenant>/<name>/ in the registry): never "." or "..".
LORA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LORA_NAME_RULE = "1..128 characters of [A-Za-z0-9._-], starting with a letter or digit"
MAX_IDEMPOTENCY_KEY_CHARS = 128
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]*$")  # printable ASCII, no spaces
MAX_IMAGE_BYTES = 16 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}  # PIL format -> content type

# ---- defaults ----------------------------------------------------------------------------------------------------
DEFAULT_FPS = 24.0
DEFAULT_GUIDANCE = 5.0
DEFAULT_LORA_SCALE = 1.0
# GenerationParams' `optional` scalars: unset is None here and stays None when resolved (single text CFG, no step
# cache) or means the video's value (audio_*)
OPTIONAL_FIELDS = ("sync_guidance_scale", "audio_guidance_scale", "audio_sync_guidance_scale", "step_cache")
SEED_DRAW_BOUND = 2**31  # a drawn seed lies in [0, 2^31)
GENERATE_SEED = 42  # `mova generate` without --seed: the same output every run (the gateway draws one instead)


@dataclass(frozen=True)
class Preset:
    """The checkpoint-dependent defaults."""

    height: int
    width: int
    num_frames: int
    num_inference_steps: int


REAL_PRESET = Preset(height=352, width=640, num_frames=193, num_inference_steps=50)  # official MOVA-360p defaults
TINY_PRESET = Preset(height=64, width=96, num_frames=17, num_inference_steps=10)  # demo checkpoint: seconds on a CPU


def preset_for(rules: ModelRules) -> Preset:
    return TINY_PRESET if rules.random_weights else REAL_PRESET


class InvalidArgument(ValueError):
    """A request field is invalid: `field` names it (dotted for nested fields, e.g. "lora.name"), `reason` says why."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class GenerationRequest:
    """One clip to make. None = the default (see OPTIONS); after `resolve` no field is None."""

    prompt: str
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    fps: float | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    enhance_prompt: bool = False
    lora_name: str = ""  # "" = no adapter
    lora_scale: float | None = None
    priority: int = 0
    sync_guidance_scale: float | None = None  # None = single text CFG (no default to fill: unset is a choice)
    duration_s: float = 0.0  # 0 = one clip; more = segments of num_frames joined (movakit/long_video.py)
    audio_guidance_scale: float | None = None  # the text scale on the audio velocity; None = guidance_scale
    audio_sync_guidance_scale: float | None = None  # the bridge scale on the audio velocity; None = sync's
    shots: tuple[str, ...] = ()  # prompts of segments 1, 2, ... of a long video (the last repeats); () = prompt
    step_cache: float | None = None  # None = off (the sampler's outputs); no default to fill: unset is a choice

    def require_resolved(self) -> GenerationRequest:
        """self, or ValueError naming the first field still None (stages run resolved requests only)."""
        for f in dataclasses.fields(self):
            optional = f.name in OPTIONAL_FIELDS or (f.name == "lora_scale" and not self.lora_name)
            if getattr(self, f.name) is None and not optional:
                raise ValueError(f"{f.name}: not resolved (movakit.request.resolve fills every default)")
        return self


# ---- resolution and validation -----------------------------------------------------------------------------------
def resolve(req: GenerationRequest, rules: ModelRules, *, rng: random.Random | None = None) -> GenerationRequest:
    """`req` with every default filled in for this checkpoint and a seed drawn when none was given."""
    preset = preset_for(rules)

    def pick(value, default):
        return default if value is None else value

    return dataclasses.replace(
        req,
        negative_prompt=req.negative_prompt or OFFICIAL_NEGATIVE_PROMPT,
        height=pick(req.height, preset.height),
        width=pick(req.width, preset.width),
        num_frames=pick(req.num_frames, preset.num_frames),
        fps=pick(req.fps, DEFAULT_FPS),
        num_inference_steps=pick(req.num_inference_steps, preset.num_inference_steps),
        guidance_scale=pick(req.guidance_scale, DEFAULT_GUIDANCE),
        audio_guidance_scale=pick(req.audio_guidance_scale, pick(req.guidance_scale, DEFAULT_GUIDANCE)),
        audio_sync_guidance_scale=pick(req.audio_sync_guidance_scale, req.sync_guidance_scale),
        seed=pick(req.seed, (rng or random.SystemRandom()).randrange(SEED_DRAW_BOUND)),
        lora_scale=pick(req.lora_scale, DEFAULT_LORA_SCALE) if req.lora_name else req.lora_scale,
    )


def validate(req: GenerationRequest, rules: ModelRules) -> GenerationRequest:
    """Check a resolved request against the limits and the checkpoint's rules; returns it, or raises
    InvalidArgument for the first bad field (in the order of GenerationRequest)."""
    req.require_resolved()
    for f in dataclasses.fields(req):
        check_field(req, f.name)
    step = rules.size_step
    for name in ("height", "width"):
        value = getattr(req, name)
        if value % step:
            raise InvalidArgument(name, f"{value} is not a multiple of {step}")
    sizes = rules.supported_sizes
    if sizes is not None and (req.height, req.width) not in sizes:
        listed = ", ".join(f"{h}x{w}" for h, w in sorted(sizes))
        raise InvalidArgument("height", f"size {req.height}x{req.width} (height x width) is not supported by this "
                                        f"checkpoint; use {listed}")
    n, stride = req.num_frames, rules.temporal_stride
    if n % stride != 1:
        raise InvalidArgument("num_frames", f"{n} is not {stride}k+1 (e.g. {max(n - n % stride + 1, FRAMES[0])})")
    if req.shots:
        count = plan_segments(req.duration_s, req.fps, n).count if req.duration_s else 1
        if len(req.shots) >= count:  # segment 0 uses prompt
            raise InvalidArgument("shots", f"{len(req.shots)} given; the video has {count} segment(s), so at most "
                                           f"{count - 1} (segment 0 uses prompt)")
    return req


def _outside(value, bounds: tuple, name: str) -> None:
    low, high = bounds
    if not low <= value <= high:
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        raise InvalidArgument(name, f"{shown} is outside {low:g}..{high:g}" if isinstance(low, float)
                              else f"{shown} is outside {low}..{high}")


def check_field(req: GenerationRequest, name: str) -> None:
    """The limits of one field that do not depend on the checkpoint (None is not checked: it means the default)."""
    value = getattr(req, name)
    if value is None:
        return
    if name == "prompt":
        if not has_visible_text(value):
            raise InvalidArgument(name, "must contain visible text (not only spaces, control or zero-width "
                                        "characters)")
        if len(value) > MAX_PROMPT_CHARS:
            raise InvalidArgument(name, f"{len(value)} characters; at most {MAX_PROMPT_CHARS}")
    elif name == "negative_prompt":
        if len(value) > MAX_PROMPT_CHARS:
            raise InvalidArgument(name, f"{len(value)} characters; at most {MAX_PROMPT_CHARS}")
    elif name in ("height", "width"):
        _outside(value, SIDE, name)
    elif name == "num_frames":
        _outside(value, FRAMES, name)
    elif name == "fps":
        _outside(value, FPS, name)
    elif name == "num_inference_steps":
        _outside(value, STEPS, name)
    elif name in ("guidance_scale", "audio_guidance_scale"):
        _outside(value, GUIDANCE, name)
    elif name == "seed":
        if not SEED[0] <= value <= SEED[1]:
            raise InvalidArgument(name, f"{value} is outside 0..2^63-1")
    elif name == "priority":
        _outside(value, PRIORITY, name)
    elif name == "sync_guidance_scale":
        _outside(value, SYNC_GUIDANCE, name)
    elif name == "audio_sync_guidance_scale":
        if req.sync_guidance_scale is None:
            raise InvalidArgument(name, "needs sync_guidance_scale (dual guidance)")
        _outside(value, SYNC_GUIDANCE, name)
    elif name == "duration_s":
        _outside(value, DURATION, name)
    elif name == "shots":
        for i, shot in enumerate(value, 1):
            try:
                check_field(dataclasses.replace(req, prompt=shot), "prompt")
            except InvalidArgument as exc:
                raise InvalidArgument(name, f"shot {i}: {exc.reason}") from None
    elif name == "step_cache":
        if not STEP_CACHE[0] < value <= STEP_CACHE[1]:
            raise InvalidArgument(name, f"{value:g} is outside ({STEP_CACHE[0]:g}, {STEP_CACHE[1]:g}]")
    elif name == "lora_name":
        if value and not LORA_NAME.match(value):
            raise InvalidArgument("lora.name", f"{value!r} must be {LORA_NAME_RULE}")
    elif name == "lora_scale":
        if not req.lora_name:
            raise InvalidArgument("lora.scale", "needs a LoRA adapter name (lora.name)")
        if not 0 < value <= LORA_SCALE_MAX:
            raise InvalidArgument("lora.scale", f"{value:g} is outside (0, {LORA_SCALE_MAX:g}]")


def guidance_summary(req: GenerationRequest) -> str:
    """The guidance of a resolved request in words, for progress and status lines."""
    text = f"guidance {req.guidance_scale:g}"
    if req.audio_guidance_scale not in (None, req.guidance_scale):
        text += f" (audio {req.audio_guidance_scale:g})"
    if req.sync_guidance_scale is not None:
        text += f", sync guidance {req.sync_guidance_scale:g}"
        if req.audio_sync_guidance_scale not in (None, req.sync_guidance_scale):
            text += f" (audio {req.audio_sync_guidance_scale:g})"
    return text


def has_visible_text(text: str) -> bool:
    """True when `text` holds a character other than spaces, separators, control, format (e.g. zero-width),
    private-use or unassigned ones."""
    return any(not unicodedata.category(ch).startswith(("C", "Z")) for ch in text)


def validate_image(data: bytes, *, field: str = "image") -> str:
    """Check that `data` is a whole PNG, JPEG or WebP image of sane size; returns its content type."""
    from PIL import Image

    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidArgument(field, f"{len(data)} bytes; at most {MAX_IMAGE_BYTES} ({MAX_IMAGE_BYTES >> 20} MiB)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                kind = image.format or "unknown"
                if kind not in IMAGE_TYPES:
                    raise InvalidArgument(field, f"a {kind} image; only PNG, JPEG or WebP are accepted")
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise InvalidArgument(
                        field, f"{width}x{height} is {width * height} pixels; at most {MAX_IMAGE_PIXELS}")
                image.load()  # decodes the pixel data: truncated or corrupt files fail here
    except InvalidArgument:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise InvalidArgument(field, f"image too large to decode safely: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad input
        raise InvalidArgument(field, f"not a decodable PNG, JPEG or WebP image ({type(exc).__name__}: {exc})") from None
    if width < 1 or height < 1:
        raise InvalidArgument(field, f"image has no pixels ({width}x{height})")
    return IMAGE_TYPES[kind]


def validate_idempotency_key(key: str, *, field: str = "idempotency_key") -> None:
    if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidArgument(field, f"{len(key)} characters; at most {MAX_IDEMPOTENCY_KEY_CHARS}")
    if not _IDEMPOTENCY_KEY.match(key):
        raise InvalidArgument(field, "must be printable ASCII without spaces")


# ---- the proto form (GenerationParams: 0 / "" / unset mean the default) ------------------------------------------
def from_proto(params) -> GenerationRequest:
    """A GenerationRequest of a movakit.api.v1.GenerationParams message."""
    has_lora = params.HasField("lora") and bool(params.lora.name)
    return GenerationRequest(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt or None,
        height=params.height or None,
        width=params.width or None,
        num_frames=params.num_frames or None,
        fps=params.fps or None,
        num_inference_steps=params.num_inference_steps or None,
        guidance_scale=params.guidance_scale or None,
        seed=params.seed if params.HasField("seed") else None,
        enhance_prompt=params.enhance_prompt,
        lora_name=params.lora.name if has_lora else "",
        lora_scale=(params.lora.scale or None) if params.HasField("lora") else None,
        priority=params.priority,
        duration_s=params.duration_s,
        shots=tuple(params.shots),
        **optional_fields(params),
    )


def optional_fields(params) -> dict[str, float | None]:
    """The OPTIONAL_FIELDS of a GenerationParams message, None where unset."""
    return {name: getattr(params, name) if params.HasField(name) else None for name in OPTIONAL_FIELDS}


def to_proto(req: GenerationRequest):
    """The movakit.api.v1.GenerationParams of a request (None -> 0 / "" / unset: the default)."""
    from movakit.api.v1 import common_pb2

    params = common_pb2.GenerationParams(
        prompt=req.prompt, negative_prompt=req.negative_prompt or "", height=req.height or 0,
        width=req.width or 0, num_frames=req.num_frames or 0, fps=req.fps or 0.0,
        num_inference_steps=req.num_inference_steps or 0, guidance_scale=req.guidance_scale or 0.0,
        enhance_prompt=req.enhance_prompt, priority=req.priority, duration_s=req.duration_s, shots=list(req.shots),
    )
    if req.seed is not None:
        params.seed = req.seed
    for name in OPTIONAL_FIELDS:
        if getattr(req, name) is not None:
            setattr(params, name, getattr(req, name))
    if req.lora_name or req.lora_scale is not None:
        params.lora.name = req.lora_name
        params.lora.scale = req.lora_scale or 0.0
    return params
