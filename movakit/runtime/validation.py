"""Request validation of the gateway's Submit (no gRPC in here). `mova generate` checks its own options
(movakit/cli/generate.py) and does not call this module.

`validate_generation_params` checks a fully resolved parameter set (defaults already filled in by
`with_defaults`) and raises InvalidArgument(field, message) for the first bad field. Nothing is rounded or
patched: a value outside the contract is an error.
"""

from __future__ import annotations

import io
import random
import re
import warnings
from dataclasses import dataclass

from PIL import Image

from movakit.api.v1 import common_pb2

# MOVA-SPEC §4.1 defaults (360p, 8 s at 24 fps).
DEFAULT_HEIGHT = 352
DEFAULT_WIDTH = 640
DEFAULT_NUM_FRAMES = 193
DEFAULT_FPS = 24.0
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 5.0

# (height, width) pairs the released checkpoints support.
SUPPORTED_SIZES = frozenset({(352, 640), (640, 352), (720, 1280), (1280, 720)})

MAX_PROMPT_CHARS = 2000
MAX_IDEMPOTENCY_KEY_CHARS = 128
MAX_IMAGE_BYTES = 16 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
MAX_SEED = 2**63 - 1
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]*$")  # printable ASCII, no spaces
_LORA_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class InvalidArgument(ValueError):
    """A request field is invalid; `field` is its name (dotted for nested fields, e.g. "params.height")."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What a deployment accepts. any_size=True allows every multiple of 16 in [min_side, max_side] (tiny test
    checkpoints); otherwise only SUPPORTED_SIZES."""

    any_size: bool = False
    min_side: int = 16
    max_side: int = 1280
    min_frames: int = 5
    max_frames: int = 193
    min_steps: int = 1
    max_steps: int = 100
    min_guidance: float = 1.0
    max_guidance: float = 20.0
    min_fps: float = 8.0
    max_fps: float = 60.0
    max_priority: int = 9


DEFAULT_LIMITS = Limits()


def with_defaults(params: common_pb2.GenerationParams, *, rng: random.Random | None = None) -> common_pb2.GenerationParams:
    """A copy of `params` with every zero field set to its documented default and a seed drawn when unset."""
    out = common_pb2.GenerationParams()
    out.CopyFrom(params)
    out.height = out.height or DEFAULT_HEIGHT
    out.width = out.width or DEFAULT_WIDTH
    out.num_frames = out.num_frames or DEFAULT_NUM_FRAMES
    out.fps = out.fps or DEFAULT_FPS
    out.num_inference_steps = out.num_inference_steps or DEFAULT_STEPS
    out.guidance_scale = out.guidance_scale or DEFAULT_GUIDANCE
    if not out.HasField("seed"):
        out.seed = (rng or random.SystemRandom()).randrange(0, 2**31)
    if out.HasField("lora") and out.lora.scale == 0:
        out.lora.scale = 1.0
    return out


def validate_generation_params(params, *, limits: Limits = DEFAULT_LIMITS, prefix: str = "params.") -> None:
    """Raises InvalidArgument for the first invalid field of a resolved parameter set.

    `params` is a GenerationParams message (or any object with the same attribute names; the lora checks then
    do not apply); field names in errors are prefixed with `prefix`.
    """

    def bad(field: str, message: str) -> InvalidArgument:
        return InvalidArgument(prefix + field, message)

    prompt = params.prompt
    if not prompt or not prompt.strip():
        raise bad("prompt", "must not be empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise bad("prompt", f"{len(prompt)} characters; at most {MAX_PROMPT_CHARS}")
    if len(params.negative_prompt) > MAX_PROMPT_CHARS:
        raise bad("negative_prompt", f"{len(params.negative_prompt)} characters; at most {MAX_PROMPT_CHARS}")

    for name in ("height", "width"):
        value = getattr(params, name)
        if value % 16:
            raise bad(name, f"{value} is not a multiple of 16")
        if not limits.min_side <= value <= limits.max_side:
            raise bad(name, f"{value} is outside {limits.min_side}..{limits.max_side}")
    if not limits.any_size and (params.height, params.width) not in SUPPORTED_SIZES:
        sizes = ", ".join(f"{h}x{w}" for h, w in sorted(SUPPORTED_SIZES))
        raise bad("height", f"size {params.height}x{params.width} (height x width) is not supported; use {sizes}")

    frames = params.num_frames
    if frames % 4 != 1:
        raise bad("num_frames", f"{frames} does not satisfy num_frames % 4 == 1 (e.g. {frames - frames % 4 + 1})")
    if not limits.min_frames <= frames <= limits.max_frames:
        raise bad("num_frames", f"{frames} is outside {limits.min_frames}..{limits.max_frames}")

    fps = params.fps
    if not limits.min_fps <= fps <= limits.max_fps:
        raise bad("fps", f"{fps:g} is outside {limits.min_fps:g}..{limits.max_fps:g}")
    steps = params.num_inference_steps
    if not limits.min_steps <= steps <= limits.max_steps:
        raise bad("num_inference_steps", f"{steps} is outside {limits.min_steps}..{limits.max_steps}")
    guidance = params.guidance_scale
    if not limits.min_guidance <= guidance <= limits.max_guidance:
        raise bad(
            "guidance_scale", f"{guidance:g} is outside {limits.min_guidance:g}..{limits.max_guidance:g}"
        )
    if not 0 <= params.seed <= MAX_SEED:
        raise bad("seed", f"{params.seed} is outside 0..{MAX_SEED}")
    if not 0 <= params.priority <= limits.max_priority:
        raise bad("priority", f"{params.priority} is outside 0..{limits.max_priority}")
    if isinstance(params, common_pb2.GenerationParams) and params.HasField("lora"):
        if not _LORA_NAME.match(params.lora.name):
            raise bad("lora.name", f"{params.lora.name!r} must be 1..128 characters of [A-Za-z0-9._-]")
        if not 0 < params.lora.scale <= 2:
            raise bad("lora.scale", f"{params.lora.scale:g} is outside (0, 2]")


def validate_image(data: bytes, *, field: str = "image") -> tuple[int, int]:
    """Checks that `data` is a decodable image of sane size; returns (width, height)."""
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidArgument(field, f"{len(data)} bytes; at most {MAX_IMAGE_BYTES} ({MAX_IMAGE_BYTES >> 20} MiB)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise InvalidArgument(
                        field, f"{width}x{height} is {width * height} pixels; at most {MAX_IMAGE_PIXELS}"
                    )
                image.load()  # decodes the pixel data: truncated or corrupt files fail here
    except InvalidArgument:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise InvalidArgument(field, f"image too large to decode safely: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad input
        raise InvalidArgument(field, f"not a decodable image ({type(exc).__name__}: {exc})") from None
    if width < 1 or height < 1:
        raise InvalidArgument(field, f"image has no pixels ({width}x{height})")
    return width, height


def validate_idempotency_key(key: str, *, field: str = "idempotency_key") -> None:
    if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidArgument(field, f"{len(key)} characters; at most {MAX_IDEMPOTENCY_KEY_CHARS}")
    if not _IDEMPOTENCY_KEY.match(key):
        raise InvalidArgument(field, "must be printable ASCII without spaces")


def image_content_type(data: bytes) -> str:
    """MIME type of an image already accepted by validate_image."""
    with Image.open(io.BytesIO(data)) as image:
        return Image.MIME.get(image.format or "", "application/octet-stream")
