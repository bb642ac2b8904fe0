"""The first frame of a request, decided the same way by `mova generate` and by the stack.

A job's first frame is, in this order: the request's image; else, when MOVA_FIRST_FRAME_* names an image
endpoint or a local text-to-image model, the frame it draws from the prompt the text encoder sees (`movakit.enhance.first_frame.
draw_first_frame_or_none`, called once: by the prompt-enhancer service, or by `movakit.pipeline.generate` right
after enhancing); else the white frame below, which the encode stage supplies. The image and the drawn frame are
bytes in both modes and become pixels through `open_first_frame`.

MOVA is an image-to-video+audio model: the first latent frame is always conditioned on an image. For text-only
requests the official workflow feeds a pure white frame (docs/model.md#first-frame-conditioning; users report
~40 % flat-colour results in that mode). `movakit.stages.encode.encode` takes another `FirstFrameSource` as `first_frame`
(`(prompt, height, width) -> RGB image`), called only when the request carries no image; its result is
centre-cropped and resized like a user's image.
"""

from __future__ import annotations

import io
from typing import Callable

from PIL import Image

FirstFrameSource = Callable[[str, int, int], Image.Image]
# (prompt, height, width) -> image bytes drawn by an image endpoint, or None to keep the white frame
FirstFrameDraw = Callable[[str, int, int], "bytes | None"]

WHITE = (255, 255, 255)


def first_frame_for(prompt: str, height: int, width: int) -> Image.Image:  # noqa: ARG001 (prompt: see module doc)
    """The spec's text-only first frame: a pure white RGB image of `width`×`height` (the prompt is not used)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"first_frame_for: height and width must be positive, got {height}x{width}")
    return Image.new("RGB", (width, height), WHITE)


def open_first_frame(data: bytes) -> Image.Image:
    """A first frame given as bytes (the request's image or the image endpoint's frame) as an RGB image."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")
