"""First frames drawn by a local diffusers text-to-image pipeline (MOVA_FIRST_FRAME_MODEL_PATH).

Any folder that `diffusers` saves with `save_pretrained` works: a small Stable Diffusion, SDXL, Flux or Z-Image
checkpoint. It is opened with `AutoPipelineForText2Image` (or `DiffusionPipeline` for pipelines the auto class
does not map) from local files only, kept loaded for the next job, and asked for one image at the job's size,
seeded with the job's seed so a redelivered task draws the same frame.
"""

from __future__ import annotations

import functools
import io

from movakit.enhance.http import BackendError
from movakit.enhance.settings import FirstFrameSettings


class LocalImageError(BackendError):
    """The local text-to-image pipeline could not be loaded or gave no image."""


@functools.lru_cache(maxsize=1)  # one pipeline resident; a process uses one folder
def _pipeline(path: str, device: str):
    import diffusers

    try:
        pipe = diffusers.AutoPipelineForText2Image.from_pretrained(path, local_files_only=True)
    except ValueError:  # "AutoPipeline can't find a pipeline linked to ...": a pipeline the auto class lacks
        pipe = diffusers.DiffusionPipeline.from_pretrained(path, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def draw_locally(settings: FirstFrameSettings, prompt: str, height: int, width: int, *, seed: int) -> bytes:
    """PNG bytes of one `width` x `height` image of `prompt`; LocalImageError when the folder does not load as
    a text-to-image pipeline or drawing fails."""
    import torch

    try:
        pipe = _pipeline(settings.model_path, settings.device)
        steps = {"num_inference_steps": settings.steps} if settings.steps else {}  # else the pipeline's default
        generator = torch.Generator("cpu").manual_seed(seed)
        image = pipe(prompt=prompt, height=height, width=width, generator=generator, output_type="pil",
                     **steps).images[0]
    except Exception as exc:  # noqa: BLE001 - diffusers raises many types for a bad folder or size
        raise LocalImageError(f"local text-to-image model {settings.model_path}: {type(exc).__name__}: {exc}") from None
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG")
    return out.getvalue()
