"""The embedded pipeline: enhance -> encode -> denoise -> decode -> MP4/WAV/PNG, in one process (`mova generate`).

Stages hand tensors over in memory; nothing here touches the network. With the enhancer off (the default of
`mova generate`) and the default first-frame source, the result follows the official MOVA sampler step for step
(docs/sampler.md#steps): same initial noise for the same seed, same timesteps, expert switch, CFG and Euler update.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from movakit.execution import cfg_batch_for
from movakit.media import write_outputs
from movakit.model_rules import ModelRules
from movakit.request import GenerationRequest
from movakit.stages.decode import DecodeResult, decode, decode_request
from movakit.stages.denoise import DenoiseResult, StepHook, denoise, denoise_request
from movakit.stages.encode import encode, encode_request
from movakit.stages.first_frame import FirstFrameDraw, open_first_frame

if TYPE_CHECKING:
    from movakit.enhance.enhancer import Enhancer
    from movakit.loading.checkpoint import MovaModels

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


@dataclass(frozen=True)
class Clip:
    """One clip made in memory (make_clip), before anything is written."""

    clip: DecodeResult
    prompt_used: str
    enhance_backend: str
    enhance_events: tuple[str, ...]
    latents: DenoiseResult  # final latents, on the CPU
    times: StageTimes  # write_s is 0: nothing was written


@dataclass(frozen=True)
class RunOptions:
    """How the embedded pipeline runs a request: everything but the request, the models and where outputs go.

    rules: the checkpoint's ModelRules.
    image: the first-frame image file (PNG, JPEG or WebP bytes, as the gateway takes it; None: the frame
      `draw_first_frame` draws from the prompt used, when given and it draws one, else the white frame; the rule
      of movakit/stages/first_frame.py).
    enhancer: a movakit.stages.enhance Enhancer, or None to use the prompt as given.
    on_step: called after every denoise step.
    cfg_batch: batch the two guidance branches; None = movakit.execution.cfg_batch_for(device), as the denoiser
      service decides.
    offload: models were loaded on the CPU; each component visits `device` only while it runs, and only the
      active video expert is on `device` during denoising (component-wise offload, as the official `--offload cpu`).
    device: where the models run (None: where the audio DiT is).
    on_stage: called with "enhance" (only when enhancing), "encode", "denoise", "decode", "write" as each stage
      starts (make_clip alone never says "write").
    """

    rules: ModelRules
    image: bytes | None = None
    enhancer: Enhancer | None = None
    on_step: StepHook | None = None
    cfg_batch: bool | None = None
    offload: bool = False
    device: str | torch.device | None = None
    draw_first_frame: FirstFrameDraw | None = None
    on_stage: Callable[[str], None] | None = None

    def stage(self, name: str) -> None:
        if self.on_stage is not None:
            self.on_stage(name)


@torch.no_grad()
def generate(models: MovaModels, req: GenerationRequest, output: str | Path, options: RunOptions, *,
             latents_path: str | Path | None = None) -> GenerateResult:
    """Run the whole pipeline and write `output` (.mp4) plus the .wav and .png beside it.

    models: a movakit.loading.MovaModels with every component loaded.
    req: a resolved request (movakit.request.resolve) for one clip (a long one, duration_s > 0: movakit/long_video.py).
    latents_path: also save the final latents (see save_latents).
    """
    made = make_clip(models, req, options)
    if latents_path is not None:
        save_latents(made.latents, latents_path)
    options.stage("write")
    t0 = time.perf_counter()
    mp4, wav, png = write_outputs(made.clip, output)
    return GenerateResult(
        mp4=mp4,
        wav=wav,
        png=png,
        prompt_used=made.prompt_used,
        enhance_backend=made.enhance_backend,
        enhance_events=made.enhance_events,
        latents=made.latents,
        times=dataclasses.replace(made.times, write_s=time.perf_counter() - t0),
    )


@torch.no_grad()
def make_clip(models: MovaModels, req: GenerationRequest, options: RunOptions) -> Clip:
    """Enhance -> encode -> denoise -> decode one clip in memory."""
    req.require_resolved()
    stage, image, offload = options.stage, options.image, options.offload
    device = torch.device(options.device) if options.device is not None else next(models.audio_dit.parameters()).device
    cfg_batch = options.cfg_batch if options.cfg_batch is not None else cfg_batch_for(str(device))

    # --- enhance (optional) ---
    t0 = time.perf_counter()
    prompt, backend, events = req.prompt, "disabled", ()
    if options.enhancer is not None:
        stage("enhance")
        from movakit.stages.enhance import EnhanceRequest, enhance

        result = enhance(options.enhancer, EnhanceRequest(prompt=req.prompt, image=image, enabled=True))
        prompt, backend, events = result.prompt, result.backend, result.events
    if image is None and options.draw_first_frame is not None:
        image = options.draw_first_frame(prompt, req.height, req.width)
    t1 = time.perf_counter()

    # --- encode ---
    stage("encode")
    with _visiting(offload, device, models.text_encoder, models.video_vae):
        enc = encode(models, encode_request(req, prompt, open_first_frame(image) if image is not None else None))
    t2 = time.perf_counter()

    # --- denoise (the stage itself places the two video experts) ---
    stage("denoise")
    with _visiting(offload, device, models.audio_dit, models.bridge, also_back=(models.video_dit, models.video_dit_2)):
        latents = denoise(models, denoise_request(req, enc, options.rules), on_step=options.on_step,
                          cfg_batch=cfg_batch, offload=offload)
    latents = DenoiseResult(video_latents=latents.video_latents.cpu(), audio_latents=latents.audio_latents.cpu(),
                            reused_forwards=latents.reused_forwards)
    t3 = time.perf_counter()

    # --- decode ---
    stage("decode")
    with _visiting(offload, device, models.video_vae, models.audio_vae):
        clip = decode(models, decode_request(req, latents.video_latents, latents.audio_latents))
    t4 = time.perf_counter()
    return Clip(clip=clip, prompt_used=prompt, enhance_backend=backend, enhance_events=tuple(events),
                latents=latents, times=StageTimes(t1 - t0, t2 - t1, t3 - t2, t4 - t3, 0.0))
