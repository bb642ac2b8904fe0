"""The first frame used when a request has no reference image (text-to-video+audio).

MOVA is an image-to-video+audio model: the first latent frame is always conditioned on an image. For text-only
requests the official workflow feeds a pure white frame (MOVA-SPEC §1.3; users report ~40 % flat-colour
results in that mode). This module is the one place that choice lives.

To replace it (e.g. with a text-to-image model that draws a first frame from the prompt), write another
function with the same signature `(prompt: str, height: int, width: int) -> PIL.Image.Image` returning an RGB
image of exactly `width`×`height`, and pass it as `first_frame` to `movakit.pipeline.generate` (or to
`movakit.stages.encode.encode`, which calls it only when the request carries no image; the result is then
centre-cropped and resized like a user's image). `movakit.enhance.first_frame.first_frame_source` is one.
"""

from __future__ import annotations

from typing import Callable

from PIL import Image

FirstFrameSource = Callable[[str, int, int], Image.Image]

WHITE = (255, 255, 255)


def first_frame_for(prompt: str, height: int, width: int) -> Image.Image:  # noqa: ARG001 (prompt: see module doc)
    """The spec's text-only first frame: a pure white RGB image of `width`×`height` (the prompt is not used)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"first_frame_for: height and width must be positive, got {height}x{width}")
    return Image.new("RGB", (width, height), WHITE)
