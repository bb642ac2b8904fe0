"""Denoise stage: MOVA's flow-matching sampler over the dual-tower model (docs/sampler.md#steps and
docs/sampler.md#scheduler).

The loop is written out in `denoise` below, step by step:
  1. initial noise: one CPU `torch.Generator` seeded with `seed`, video noise drawn first, then audio, float32
     (the official sampler's order), unless the request passes the noise (or, when resuming, the latents);
  2. per step i with timestep pair (t_v, t_a): pick the video expert (`video_dit` while t_v >= boundary_ratio·1000,
     then `video_dit_2` for good: the switch is sticky);
  3. x_in = cat(latent, y) (36 ch); run the dual-tower forward for each guidance branch (stages/guidance.py): the
     positive and, when guidance_scale != 1, the negative prompt (image conditioning `y` kept in the negative
     branch); with sync guidance also the bridge-off branches. Branches with the same bridge setting run as one
     batch (cfg_batch) or one forward each; with step caching on (req.step_cache, off by default) a forward may
     reuse its blocks' last residual instead of running them (movakit/models/step_cache.py; never the last step);
  4. guidance in float32: v = v_neg + s·(v_pos − v_neg) (or the dual form of stages/guidance.py), video and audio
     alike;
  5. Euler update in float32 with the scheduler (σ(t_next) − σ(t_cur)), the last step to σ = 0;
  6. `on_step(StepInfo)` after each step: progress, checkpoints, and cancellation (the hook raises).
Latents stay float32 throughout; only the model forward runs in the model dtype.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import nn

from movakit.model_rules import ModelRules
from movakit.models.step_cache import StepCache
from movakit.request import GenerationRequest
from movakit.schedulers.flow_match_pair import FlowMatchPairScheduler
from movakit.stages.encode import EncodeResult
from movakit.stages import guidance

# Channels of the first-frame mask at the front of y (docs/model.md#first-frame-conditioning):
# y = cat(mask[4], image_latent[z_dim]).
MASK_CHANNELS = 4

# The dual-tower forward: (video_dit, audio_dit, bridge, *, video_x, audio_x, context, t_video, t_audio,
# video_fps) -> (video_velocity, audio_velocity) in float32 (movakit.models.dual_tower.dual_tower_forward).
DualTowerForward = Callable[..., tuple[torch.Tensor, torch.Tensor]]


class DenoiserModels(Protocol):
    """What the sampler reads from the loaded checkpoint (movakit.loading.MovaModels has these fields)."""

    video_dit: nn.Module | None
    video_dit_2: nn.Module | None
    audio_dit: nn.Module | None
    bridge: nn.Module | None
    scheduler: FlowMatchPairScheduler | None
    boundary_ratio: float


@dataclass(frozen=True)
class DenoiseRequest:
    context: torch.Tensor  # (1, 512, text_dim): positive prompt embedding
    negative_context: torch.Tensor  # (1, 512, text_dim): negative prompt embedding
    y: torch.Tensor  # (1, 4 + z_dim, T_lat, H/8, W/8): mask + first-frame latent (stages.encode)
    height: int
    width: int
    num_frames: int
    fps: float
    num_inference_steps: int
    guidance_scale: float
    seed: int
    audio_latent_length: int  # L_a (audio_latent_length() below, from the audio VAE's sample rate and hop)
    # Guidance on the audio-video bridge (stages/guidance.py); None = single text CFG, the released sampler.
    sync_guidance_scale: float | None = None
    # Per-modality guidance: the audio velocity's own scales; None = the video's (guidance_scale, sync_...).
    audio_guidance_scale: float | None = None
    audio_sync_guidance_scale: float | None = None
    video_noise: torch.Tensor | None = None  # (1, z_dim, T_lat, H/8, W/8); the latents at start_step when resuming
    audio_noise: torch.Tensor | None = None  # (1, audio_channels, L_a); the latents at start_step when resuming
    start_step: int = 0  # steps already done (resume): then both tensors above are required
    # Step caching (movakit/models/step_cache.py): the threshold of the accumulated change of the blocks' input
    # below which a step reuses the blocks' last residual; None = off (the sampler's outputs).
    step_cache: float | None = None

    def scales(self) -> tuple[guidance.Scales, guidance.Scales]:
        """The video's and the audio's guidance scales."""
        video = guidance.Scales(self.guidance_scale, self.sync_guidance_scale)
        audio = guidance.Scales(
            video.text if self.audio_guidance_scale is None else self.audio_guidance_scale,
            video.sync if self.audio_sync_guidance_scale is None else self.audio_sync_guidance_scale,
        )
        return video, audio


@dataclass(frozen=True)
class DenoiseResult:
    video_latents: torch.Tensor  # (1, z_dim, T_lat, H/8, W/8) float32, normalised (as the sampler ends it)
    audio_latents: torch.Tensor  # (1, audio_channels, L_a) float32, raw DAC latent
    reused_forwards: int = 0  # forwards whose blocks the step cache skipped (0 without it)


@dataclass(frozen=True)
class StepInfo:
    step: int  # steps completed so far (1..total); resume with start_step=step and these latents
    total: int
    expert: str  # "video_dit" (high noise) or "video_dit_2" (low noise)
    elapsed_s: float  # since this denoise call started
    eta_s: float  # estimated seconds left, from this call's mean step time
    video_latents: torch.Tensor
    audio_latents: torch.Tensor


StepHook = Callable[[StepInfo], None]


def audio_num_samples(sample_rate: int, num_frames: int, fps: float) -> int:
    """Audio samples of a clip: int(sample_rate · num_frames / fps) (386 000 for 193 frames at 24 fps, 48 kHz)."""
    return int(sample_rate * num_frames / fps)


def audio_latent_length(sample_rate: int, hop_length: int, num_frames: int, fps: float) -> int:
    """Audio latent length L_a = (samples − 1) // hop + 1 (403 for 193 frames at 24 fps, 48 kHz, hop 960)."""
    return (audio_num_samples(sample_rate, num_frames, fps) - 1) // hop_length + 1


def denoise_request(req: GenerationRequest, encoded: EncodeResult, rules: ModelRules, *,
                    video_noise: torch.Tensor | None = None, audio_noise: torch.Tensor | None = None,
                    start_step: int = 0) -> DenoiseRequest:
    """The denoise stage's request for a resolved generation request and the encode stage's result; the audio
    latent length from the checkpoint's audio rate and hop. The embedded pipeline and the denoiser service both
    build it here. video_noise / audio_noise / start_step: the latents to resume from (see DenoiseRequest)."""
    req.require_resolved()
    return DenoiseRequest(
        context=encoded.context, negative_context=encoded.negative_context, y=encoded.y, height=req.height,
        width=req.width, num_frames=req.num_frames, fps=req.fps, num_inference_steps=req.num_inference_steps,
        guidance_scale=req.guidance_scale, seed=req.seed, sync_guidance_scale=req.sync_guidance_scale,
        audio_guidance_scale=req.audio_guidance_scale, audio_sync_guidance_scale=req.audio_sync_guidance_scale,
        audio_latent_length=audio_latent_length(rules.audio_sample_rate, rules.audio_hop_length, req.num_frames,
                                                req.fps),
        video_noise=video_noise, audio_noise=audio_noise, start_step=start_step, step_cache=req.step_cache,
    )


def initial_noise(
    seed: int, video_shape: tuple[int, ...], audio_shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official initial noise: CPU generator seeded with `seed`, video drawn first, then audio, float32."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    video = torch.randn(video_shape, generator=generator, dtype=torch.float32)
    audio = torch.randn(audio_shape, generator=generator, dtype=torch.float32)
    return video, audio


def _param(module: nn.Module, name: str) -> torch.Tensor:
    for p in module.parameters():
        return p
    raise ValueError(f"{name} has no parameters")


def _validate(models: DenoiserModels, req: DenoiseRequest) -> None:
    for name in ("video_dit", "video_dit_2", "audio_dit", "bridge", "scheduler"):
        if getattr(models, name) is None:
            raise ValueError(f"denoise: models.{name} is not loaded")
    if req.num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {req.num_inference_steps}")
    if not 0 <= req.start_step < req.num_inference_steps:
        raise ValueError(f"start_step must be in [0, {req.num_inference_steps}), got {req.start_step}")
    if req.start_step > 0 and (req.video_noise is None or req.audio_noise is None):
        raise ValueError("start_step > 0 needs both video_noise and audio_noise (the latents to resume from)")
    if req.guidance_scale <= 0:
        raise ValueError(f"guidance_scale must be > 0, got {req.guidance_scale}")
    if req.sync_guidance_scale is not None and req.sync_guidance_scale < 0:
        raise ValueError(f"sync_guidance_scale must be >= 0, got {req.sync_guidance_scale}")
    if req.audio_guidance_scale is not None and req.audio_guidance_scale <= 0:
        raise ValueError(f"audio_guidance_scale must be > 0, got {req.audio_guidance_scale}")
    if req.audio_sync_guidance_scale is not None and (req.sync_guidance_scale is None
                                                      or req.audio_sync_guidance_scale < 0):
        raise ValueError(f"audio_sync_guidance_scale must be >= 0 and needs sync_guidance_scale, got "
                         f"{req.audio_sync_guidance_scale}")
    if req.fps <= 0:
        raise ValueError(f"fps must be > 0, got {req.fps}")
    if req.step_cache is not None and not req.step_cache > 0:
        raise ValueError(f"step_cache must be > 0 (or None: off), got {req.step_cache}")
    if req.audio_latent_length < 1:
        raise ValueError(f"audio_latent_length must be >= 1, got {req.audio_latent_length}")
    if req.y.ndim != 5 or req.y.shape[0] != 1 or req.y.shape[1] <= MASK_CHANNELS:
        raise ValueError(f"y must be (1, 4 + z_dim, T, H/8, W/8), got {tuple(req.y.shape)}")
    for name in ("context", "negative_context"):
        t = getattr(req, name)
        if t.ndim != 3 or t.shape[0] != 1:
            raise ValueError(f"{name} must be (1, seq_len, text_dim), got {tuple(t.shape)}")
    if req.context.shape != req.negative_context.shape:
        raise ValueError(
            f"context {tuple(req.context.shape)} and negative_context {tuple(req.negative_context.shape)} differ"
        )
    h_lat, w_lat = req.y.shape[-2:]
    if req.height % h_lat or req.width % w_lat or req.height // h_lat != req.width // w_lat:
        raise ValueError(f"y spatial size {h_lat}x{w_lat} does not match height x width {req.height}x{req.width}")


@torch.no_grad()
def denoise(
    models: DenoiserModels,
    req: DenoiseRequest,
    *,
    on_step: StepHook | None = None,
    cfg_batch: bool = True,
    offload: bool = False,
    forward: DualTowerForward | None = None,
) -> DenoiseResult:
    """Run steps start_step..num_inference_steps-1 of the sampler and return the final latents (float32).

    cfg_batch: run the guidance branches that share a bridge setting as one batch (default; B=2 for CFG) or as
      B=1 forwards; both give the same result up to kernel rounding (callers choose with
      movakit.execution.cfg_batch_for).
    offload: keep only the active video expert on the execution device (the device of `audio_dit`); the other
      waits on the CPU and the two trade places at the switch.
    forward: the dual-tower forward; default `movakit.models.dual_tower.dual_tower_forward`.
    on_step: called after every step with a StepInfo; an exception raised there cancels the run (it propagates).
    """
    _validate(models, req)
    if forward is None:
        from movakit.models.dual_tower import dual_tower_forward as forward
    scheduler = models.scheduler
    device = _param(models.audio_dit, "audio_dit").device
    model_dtype = _param(models.video_dit, "video_dit").dtype
    total = req.num_inference_steps

    # --- 1. initial latents (float32) ---
    y = req.y.to(device=device, dtype=torch.float32)
    video_shape = (1, y.shape[1] - MASK_CHANNELS, *y.shape[2:])
    audio_shape = (1, models.audio_dit.config.in_dim, req.audio_latent_length)
    if req.video_noise is None or req.audio_noise is None:
        video_noise, audio_noise = initial_noise(req.seed, video_shape, audio_shape)
    video = video_noise if req.video_noise is None else req.video_noise
    audio = audio_noise if req.audio_noise is None else req.audio_noise
    if tuple(video.shape) != video_shape:
        raise ValueError(f"video_noise must have shape {video_shape}, got {tuple(video.shape)}")
    if tuple(audio.shape) != audio_shape:
        raise ValueError(f"audio_noise must have shape {audio_shape}, got {tuple(audio.shape)}")
    video = video.to(device=device, dtype=torch.float32)
    audio = audio.to(device=device, dtype=torch.float32)

    # --- text contexts, in the model dtype; the guidance branches grouped by bridge setting (one batch each) ---
    context = req.context.to(device=device, dtype=model_dtype)
    negative = req.negative_context.to(device=device, dtype=model_dtype)
    video_scales, audio_scales = req.scales()
    plan = guidance.branches(video_scales, audio_scales)
    groups = [tuple(b for b in plan if b.bridge == on) for on in (True, False)]
    groups = [(g, torch.cat([negative if b.negative else context for b in g], dim=0)) for g in groups if g]
    # one B=1 context per branch, made once: the towers memoise the text keys and values per context tensor object
    # (models/layers/text_memo.py), so a slice made anew at every step would recompute them every step
    singles = {branch: ctx[k : k + 1] for group, ctx in groups for k, branch in enumerate(group)}
    # step caching: one state per forward of a step (a batch of branches, or one branch), for this call's steps
    caches = {} if req.step_cache is None else {key: StepCache(req.step_cache) for key in (
        [g for g, _ in groups] if cfg_batch else list(singles))}

    pairs = scheduler.pairs(total)  # (n, 2) float32: (t_video, t_audio)
    boundary = models.boundary_ratio * scheduler.config.num_train_timesteps
    switched = bool((pairs[: req.start_step, 0] < boundary).any())
    expert_name = "video_dit_2" if switched else "video_dit"
    if offload:
        _place_experts(models, expert_name, device)

    def run(expert: nn.Module, ctx: torch.Tensor, t_v: torch.Tensor, t_a: torch.Tensor, bridge: bool,
            cache: StepCache | None):
        b = ctx.shape[0]
        off = {} if bridge else {"a2v_condition_scale": 0.0, "v2a_condition_scale": 0.0}  # bridge residuals off
        if cache is not None:
            off["step_cache"] = cache
        x_in = torch.cat([video, y], dim=1).to(model_dtype).expand(b, -1, -1, -1, -1)  # (B, 36, T, H/8, W/8)
        a_in = audio.to(model_dtype).expand(b, -1, -1)  # (B, C_a, L_a)
        v, a = forward(
            expert,
            models.audio_dit,
            models.bridge,
            video_x=x_in,
            audio_x=a_in,
            context=ctx,
            t_video=t_v.reshape(1).expand(b).to(device),  # (B,) float32
            t_audio=t_a.reshape(1).expand(b).to(device),
            video_fps=float(req.fps),
            **off,
        )
        return v.float(), a.float()

    start = time.perf_counter()
    for i in range(req.start_step, total):
        t_v, t_a = pairs[i, 0], pairs[i, 1]

        # --- 2. expert switch (sticky) ---
        if not switched and t_v.item() < boundary:
            switched = True
            expert_name = "video_dit_2"
            if offload:
                _place_experts(models, expert_name, device)
        expert = models.video_dit_2 if switched else models.video_dit

        # --- 3. forward(s) and 4. guidance in float32 (the last step always runs the blocks) ---
        step_caches = {} if i + 1 == total else caches
        v_out: dict[guidance.Branch, torch.Tensor] = {}
        a_out: dict[guidance.Branch, torch.Tensor] = {}
        for group, group_ctx in groups:
            bridge = group[0].bridge
            if cfg_batch:
                v_g, a_g = run(expert, group_ctx, t_v, t_a, bridge, step_caches.get(group))
                for k, branch in enumerate(group):
                    v_out[branch], a_out[branch] = v_g[k : k + 1], a_g[k : k + 1]
            else:
                for branch in group:
                    v_out[branch], a_out[branch] = run(expert, singles[branch], t_v, t_a, bridge,
                                                       step_caches.get(branch))
        v_pred = guidance.combine(v_out, video_scales)
        a_pred = guidance.combine(a_out, audio_scales)

        # --- 5. Euler update (float32), the last step to sigma 0 ---
        last = i + 1 == total
        video = scheduler.step(video, v_pred, t_v, None if last else pairs[i + 1, 0])
        audio = scheduler.step(audio, a_pred, t_a, None if last else pairs[i + 1, 1])

        # --- 6. progress / checkpoint / cancel hook ---
        if on_step is not None:
            elapsed = time.perf_counter() - start
            done_here = i + 1 - req.start_step
            on_step(
                StepInfo(
                    step=i + 1,
                    total=total,
                    expert=expert_name,
                    elapsed_s=elapsed,
                    eta_s=elapsed / done_here * (total - i - 1),
                    video_latents=video,
                    audio_latents=audio,
                )
            )
    return DenoiseResult(video_latents=video, audio_latents=audio,
                         reused_forwards=sum(c.reused for c in caches.values()))


def _place_experts(models: DenoiserModels, active: str, device: torch.device) -> None:
    """Offload: the active expert on `device`, the other on the CPU (frees accelerator memory at the switch)."""
    idle = "video_dit" if active == "video_dit_2" else "video_dit_2"
    getattr(models, idle).to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    getattr(models, active).to(device)
