"""Reference of the official first-frame preprocessing (tests only; see NOTES.md "First frame").

The official script centre-crops with integer truncation of the crop size and a floor-halved offset, then
resizes with PIL's default filter for RGB images (BICUBIC); the pipeline's VideoProcessor.preprocess then
resizes to the same size (PIL returns a copy: no second filter) and maps x/255 to [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def crop_box(image_height: int, image_width: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width) of the official centre crop."""
    if image_height / image_width < height / width:  # too wide: keep all rows
        crop_w = int(image_height / height * width)
        return 0, (image_width - crop_w) // 2, image_height, crop_w
    crop_h = int(image_width / width * height)  # too tall (or equal aspect): keep all columns
    return (image_height - crop_h) // 2, 0, crop_h, image_width


def crop_and_resize(image: Image.Image, height: int, width: int,
                    resample: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
    array = np.asarray(image.convert("RGB"))
    top, left, ch, cw = crop_box(array.shape[0], array.shape[1], height, width)
    return Image.fromarray(array[top:top + ch, left:left + cw]).resize((width, height), resample)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(1, 3, H, W) float32 in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0) * 2.0 - 1.0
