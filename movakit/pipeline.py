"""The embedded pipeline: enhance -> encode -> denoise -> decode -> MP4/WAV/PNG, in one process (`mova generate`).

Stages hand tensors over in memory; nothing here touches the network. With the enhancer off (the default of
`mova generate`) and the default first-frame source, the result follows the official MOVA sampler step for step
(MOVA-SPEC §4.3): same initial noise for the same seed, same timesteps, expert switch, CFG and Euler update.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from PIL import Image

from movakit.media import write_outputs
from movakit.stages.decode import DecodeRequest, decode
from movakit.stages.denoise import DenoiseRequest, DenoiseResult, StepHook, denoise
from movakit.stages.encode import EncodeRequest, encode
from movakit.stages.first_frame import FirstFrameSource, first_frame_for

if TYPE_CHECKING:
    from movakit.enhance.enhancer import Enhancer
    from movakit.loading.checkpoint import MovaModels

# The official short negative prompt (scripts/inference_single.py, MOVA-SPEC §4.1).
OFFICIAL_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指"
)


@dataclass(frozen=True)
class GenerateRequest:
    """One clip to make. Defaults are the official inference defaults for MOVA-360p (MOVA-SPEC §4.1)."""

    prompt: str
    image: Image.Image | None = None  # None: the first-frame source (white frame by default)
    negative_prompt: str = OFFICIAL_NEGATIVE_PROMPT
    height: int = 352
    width: int = 640
    num_frames: int = 193
    fps: float = 24.0
    num_inference_steps: int = 50
    guidance_scale: float = 5.0
    seed: int = 42


@dataclass(frozen=True)
class StageTimes:
    enhance_s: float
    encode_s: float
    denoise_s: float
    decode_s: float
    write_s: float


@dataclass(frozen=True)
class GenerateResult:
    mp4: Path
    wav: Path
    png: Path
    prompt_used: str  # the prompt the text encoder saw (enhanced or the user's own)
    enhance_backend: str  # "disabled" when the enhancer was off
    enhance_events: tuple[str, ...]  # the enhancer's retries, rejected answers and fallback, in order
    latents: DenoiseResult  # final latents, on the CPU
    times: StageTimes


@contextmanager
def _visiting(offload: bool, device: torch.device, *modules: torch.nn.Module | None,
              also_back: tuple[torch.nn.Module | None, ...] = ()) -> Iterator[None]:
    """With offload: `modules` go to `device` for the block, then (with `also_back`) back to the CPU, also when
    the block raises. Without offload: nothing moves."""
    if not offload:
        yield
        return
    for module in modules:
        if module is not None:
            module.to(device)
    try:
        yield
    finally:
        for module in (*modules, *also_back):
            if module is not None:
                module.to("cpu")


def save_latents(latents: DenoiseResult, path: str | Path) -> Path:
    """safetensors with `video` (normalised latent as the sampler ends it) and `audio` (raw DAC latent), float32."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "video": latents.video_latents.detach().float().cpu().contiguous(),
            "audio": latents.audio_latents.detach().float().cpu().contiguous(),
        },
        str(path),
    )
    return path


@torch.no_grad()
def generate(
    models: MovaModels,
    req: GenerateRequest,
    output: str | Path,
    *,
    enhancer: Enhancer | None = None,
    on_step: StepHook | None = None,
    cfg_batch: bool = True,
    offload: bool = False,
    device: str | torch.device | None = None,
    first_frame: FirstFrameSource = first_frame_for,
    latents_path: str | Path | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> GenerateResult:
    """Run the whole pipeline and write `output` (.mp4) plus the .wav and .png beside it.

    models: a movakit.loading.MovaModels with every component loaded.
    enhancer: a movakit.stages.enhance Enhancer, or None to use the prompt as given.
    offload: models were loaded on the CPU; each component visits `device` only while it runs, and only the
      active video expert is on `device` during denoising (component-wise offload, as the official `--offload cpu`).
    latents_path: also save the final latents (see save_latents).
    on_stage: called with "enhance" (only when enhancing), "encode", "denoise", "decode", "write" as each stage starts.
    """
    stage = on_stage if on_stage is not None else (lambda name: None)
    device = torch.device(device) if device is not None else next(models.audio_dit.parameters()).device

    # --- enhance (optional) ---
    t0 = time.perf_counter()
    prompt, backend, events = req.prompt, "disabled", ()
    if enhancer is not None:
        stage("enhance")
        from movakit.stages.enhance import EnhanceRequest, enhance

        image_bytes = None
        if req.image is not None:
            buf = io.BytesIO()
            req.image.convert("RGB").save(buf, format="PNG")
            image_bytes = buf.getvalue()
        result = enhance(enhancer, EnhanceRequest(prompt=req.prompt, image=image_bytes, enabled=True))
        prompt, backend, events = result.prompt, result.backend, result.events
    t1 = time.perf_counter()

    # --- encode ---
    stage("encode")
    with _visiting(offload, device, models.text_encoder, models.video_vae):
        enc = encode(
            models,
            EncodeRequest(
                prompt=prompt,
                negative_prompt=req.negative_prompt,
                image=req.image,
                height=req.height,
                width=req.width,
                num_frames=req.num_frames,
            ),
            first_frame=first_frame,
        )
    t2 = time.perf_counter()

    # --- denoise (the stage itself places the two video experts; the audio length comes from the audio VAE) ---
    stage("denoise")
    with _visiting(offload, device, models.audio_dit, models.bridge, also_back=(models.video_dit, models.video_dit_2)):
        latents = denoise(
            models,
            DenoiseRequest(
                context=enc.context,
                negative_context=enc.negative_context,
                y=enc.y,
                height=req.height,
                width=req.width,
                num_frames=req.num_frames,
                fps=req.fps,
                num_inference_steps=req.num_inference_steps,
                guidance_scale=req.guidance_scale,
                seed=req.seed,
            ),
            on_step=on_step,
            cfg_batch=cfg_batch,
            offload=offload,
        )
    latents = DenoiseResult(video_latents=latents.video_latents.cpu(), audio_latents=latents.audio_latents.cpu())
    if latents_path is not None:
        save_latents(latents, latents_path)
    t3 = time.perf_counter()

    # --- decode ---
    stage("decode")
    with _visiting(offload, device, models.video_vae, models.audio_vae):
        clip = decode(models, DecodeRequest(latents.video_latents, latents.audio_latents, fps=req.fps))
    t4 = time.perf_counter()

    stage("write")
    mp4, wav, png = write_outputs(clip, output)
    t5 = time.perf_counter()
    return GenerateResult(
        mp4=mp4,
        wav=wav,
        png=png,
        prompt_used=prompt,
        enhance_backend=backend,
        enhance_events=tuple(events),
        latents=latents,
        times=StageTimes(t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4),
    )
