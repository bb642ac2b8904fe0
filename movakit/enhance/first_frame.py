"""First frames for text-only jobs from an OpenAI-compatible image-generation endpoint or a local diffusers
text-to-image folder.

MOVA always needs a first frame; without a user image the pipeline falls back to a white frame
(`movakit/stages/first_frame.py`, docs/model.md#first-frame-conditioning), which often yields flat colour.
When MOVA_FIRST_FRAME_BASE_URL is set, `generate_first_frame` asks `{base_url}/images/generations` to draw the
caption's opening paragraph; when MOVA_FIRST_FRAME_MODEL_PATH is set, a local pipeline draws it
(movakit/enhance/local_image.py). `draw_first_frame_or_none` is what both modes call (the prompt-enhancer service
and `mova generate`, right after enhancing): the rule that picks a job's first frame is in
`movakit/stages/first_frame.py`.
"""

from __future__ import annotations

import base64
import binascii
import io
import urllib.error
import urllib.request

from PIL import Image, UnidentifiedImageError

from movakit.enhance.http import BackendError, RetryPolicy, post_json
from movakit.enhance.local_image import LocalImageError, draw_locally
from movakit.enhance.settings import EnhancerSettings
from movakit.enhance.text import paragraphs

_MAX_PROMPT_CHARS = 1000  # image endpoints commonly cap prompts around here


class FirstFrameError(BackendError):
    """The image endpoint was configured but gave no usable image."""


def first_frame_prompt(caption: str) -> str:
    """What the image model is asked to draw: the caption's opening paragraph (the first moment, no audio)."""
    paras = paragraphs(caption)
    if not paras:
        raise ValueError("prompt: must not be empty")
    return paras[0][:_MAX_PROMPT_CHARS]


def generate_first_frame(
    settings: EnhancerSettings, prompt: str, height: int, width: int, *, seed: int = 0,
    notes: list[str] | None = None,
) -> bytes | None:
    """Encoded image bytes (PNG/JPEG/WebP as the endpoint sent them; PNG from a local model) for a text-only
    job, or None when nothing is configured (the caller keeps the model's white-frame fallback). `seed` seeds a
    local model (an endpoint draws as it likes).

    Raises FirstFrameError when the configured endpoint fails after its retries or the local model fails,
    ValueError for bad arguments. Retries are described in `notes` when given.
    """
    ff = settings.first_frame
    if not ff.configured:
        return None
    if height <= 0 or width <= 0:
        raise ValueError(f"height/width: {height}x{width} must be positive")
    if ff.model_path:
        try:
            return draw_locally(ff, first_frame_prompt(prompt), height, width, seed=seed)
        except LocalImageError as exc:
            raise FirstFrameError(f"first-frame generation failed: {exc}") from None
    payload = {
        "model": ff.model,
        "prompt": first_frame_prompt(prompt),
        "size": f"{width}x{height}",
        "n": 1,
        "response_format": "b64_json",
    }
    url = ff.base_url.rstrip("/") + "/images/generations"
    policy = RetryPolicy(ff.timeout_s, ff.max_retries, ff.backoff_s)
    try:
        reply = post_json(url, payload, api_key=ff.api_key, policy=policy, notes=[] if notes is None else notes)
    except BackendError as exc:
        raise FirstFrameError(f"first-frame generation failed: {exc}") from None
    image = _image_bytes(reply, url, ff.timeout_s)
    try:
        with Image.open(io.BytesIO(image)) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError):
        raise FirstFrameError(f"reply from {url} is not a readable image") from None
    return image


def _image_bytes(reply: dict, url: str, timeout_s: float) -> bytes:
    data = reply.get("data")
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise FirstFrameError(f"reply from {url} has no data[0]")
    item = data[0]
    if isinstance(item.get("b64_json"), str):
        try:
            return base64.b64decode(item["b64_json"], validate=True)
        except (binascii.Error, ValueError):
            raise FirstFrameError(f"reply from {url}: data[0].b64_json is not base64") from None
    if isinstance(item.get("url"), str):
        if not item["url"].startswith(("http://", "https://")):
            raise FirstFrameError(f"reply from {url}: data[0].url is not an http(s) URL")
        try:
            with urllib.request.urlopen(item["url"], timeout=timeout_s) as response:
                return response.read()
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise FirstFrameError(f"cannot download the image at {item['url']}: {exc}") from None
    raise FirstFrameError(f"reply from {url}: data[0] has neither b64_json nor url")


def draw_first_frame_or_none(
    settings: EnhancerSettings, prompt: str, height: int, width: int, notes: list[str], *, seed: int = 0
) -> bytes | None:
    """`generate_first_frame`, with a failing source turned into a note: None means "keep the model's own
    first frame" (nothing configured, or it failed; `notes` then says why)."""
    try:
        return generate_first_frame(settings, prompt, height, width, seed=seed, notes=notes)
    except FirstFrameError as exc:
        notes.append(f"{exc}; using the default first frame")
        return None

