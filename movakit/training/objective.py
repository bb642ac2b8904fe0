"""The official MOVA fine-tuning objective: frozen encoders, two-range timesteps, flow-matching MSE (docs/training.md).

  1. encode (no gradients, encoders in eval mode): the caption through the text encoder, the clip through the video
     VAE (normalised posterior mode), the first frame into y exactly as at inference (stages.encode.image_condition),
     the waveform through the audio VAE (posterior mean, not normalised). Done once per clip: the encoders are
     frozen, so the result never changes (the official trainer recomputes it every step);
  2. timesteps: the grid is the scheduler's 1000-step schedule (t from 1000 down to ~19.64 at the release's shift
     5); the boundary index is the count of grid timesteps >= boundary_ratio · 1000 (359 for 0.9). Micro-batch m
     trains the high-noise expert (video_dit) on indices [0, boundary) when m is even and the low-noise expert
     (video_dit_2) on [boundary, 1000) when odd; the index is uniform over its range; audio t = video t;
  3. x_t = (1 − σ)·x_0 + σ·ε with σ looked up from t, video noise drawn before audio noise;
  4. one joint forward (the inference forward) on cat(x_t, y), fps as the clip's;
  5. loss = MSE(v̂_video, ε_v − x_0,v) + MSE(v̂_audio, ε_a − x_0,a), each the mean over its elements.
Noise and timestep indices come from a CPU generator seeded per micro-batch, so a resumed run draws the same
values as an uninterrupted one (the official trainer draws them from the device's global generator).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from movakit.models.dual_tower import BlockRunner, dual_tower_forward
from movakit.stages.encode import image_condition
from movakit.training.data import TrainingClip

HIGH_NOISE, LOW_NOISE = "video_dit", "video_dit_2"


@dataclass(frozen=True)
class EncodedClip:
    context: torch.Tensor  # (1, 512, text_dim), model dtype
    video_latents: torch.Tensor  # (1, z_dim, T_lat, H/8, W/8) float32, normalised
    y: torch.Tensor  # (1, 4 + z_dim, T_lat, H/8, W/8) float32
    audio_latents: torch.Tensor  # (1, audio_latent_dim, L) float32
    fps: float


@dataclass(frozen=True)
class StepLoss:
    loss: torch.Tensor  # video_loss + audio_loss, with gradients
    video_loss: float
    audio_loss: float
    timestep: float
    expert: str


@torch.no_grad()
def encode_clip(models, clip: TrainingClip, fps: float) -> EncodedClip:
    """Step 1 for one clip; `models` needs text_encoder, video_vae and audio_vae."""
    for name in ("text_encoder", "video_vae", "audio_vae"):
        module = getattr(models, name)
        if module is None:
            raise ValueError(f"encode_clip: models.{name} is not loaded")
        module.eval()  # the official trainer leaves the text encoder in train mode (dropout on): not here
    vae = models.video_vae
    device = next(vae.parameters()).device
    video = clip.video.unsqueeze(0).to(device)  # (1, 3, T, H, W)
    video_latents = vae.encode(video)
    y = image_condition(vae, video[:, :, 0], video.shape[2])
    audio_device = next(models.audio_vae.parameters()).device
    mean, _logvar = models.audio_vae.encode(clip.audio.unsqueeze(0).to(audio_device))  # (1, C, L)
    context = models.text_encoder.encode([clip.caption])
    return EncodedClip(context=context, video_latents=video_latents.float(), y=y.float(),
                       audio_latents=mean.float(), fps=fps)


class TrainingTimesteps:
    """Step 2: the timestep grid, the expert boundary and the per-micro-batch draw."""

    def __init__(self, scheduler, boundary_ratio: float) -> None:
        self.scheduler = scheduler
        n = scheduler.config.num_train_timesteps
        self.grid = scheduler.timesteps(n)  # (n,) float32, descending
        self.boundary_index = int((self.grid >= boundary_ratio * n).sum())
        if not 0 < self.boundary_index < n:
            raise ValueError(f"boundary_ratio {boundary_ratio} leaves an expert without timesteps")

    @staticmethod
    def expert(micro_step: int) -> str:
        return HIGH_NOISE if micro_step % 2 == 0 else LOW_NOISE

    def draw(self, micro_step: int, generator: torch.Generator) -> tuple[int, torch.Tensor]:
        """(grid index, timestep) for this micro-batch, uniform over its expert's index range."""
        n = len(self.grid)
        low, high = (0, self.boundary_index) if micro_step % 2 == 0 else (self.boundary_index, n)
        u = low / n + torch.rand((), generator=generator) * (high - low) / n
        index = min(max(int(torch.floor(u * n)), low), high - 1)
        return index, self.grid[index]


def micro_step_generator(seed: int, micro_step: int) -> torch.Generator:
    """The CPU generator of one micro-batch: a pure function of (seed, micro_step), so resuming redraws the same."""
    return torch.Generator(device="cpu").manual_seed((seed * 1_000_003 + micro_step) % (2**63))


def flow_matching_loss(models, clip: EncodedClip, timesteps: TrainingTimesteps, micro_step: int, seed: int, *,
                       run_block: BlockRunner | None = None) -> StepLoss:
    """Steps 2-5 for one micro-batch; gradients flow into whatever parameters of the DiTs and bridge are trainable.
    run_block calls each block (MemoryPlan.block_runner: checkpointed or streamed; same values, less memory)."""
    generator = micro_step_generator(seed, micro_step)
    _index, t = timesteps.draw(micro_step, generator)
    expert_name = timesteps.expert(micro_step)
    expert = getattr(models, expert_name)
    dtype, device = expert.dtype, expert.device
    video_noise = torch.randn(clip.video_latents.shape, generator=generator, dtype=torch.float32)
    audio_noise = torch.randn(clip.audio_latents.shape, generator=generator, dtype=torch.float32)
    sigma = timesteps.scheduler.sigma_of(t)
    x0_v, x0_a = clip.video_latents.to(device), clip.audio_latents.to(device)
    noisy_video = (1 - sigma) * x0_v + sigma * video_noise.to(device)
    noisy_audio = (1 - sigma) * x0_a + sigma * audio_noise.to(device)
    t_batch = t.reshape(1).to(device)
    video_pred, audio_pred = dual_tower_forward(
        expert, models.audio_dit, models.bridge,
        video_x=torch.cat([noisy_video, clip.y.to(device)], dim=1).to(dtype),
        audio_x=noisy_audio.to(dtype), context=clip.context.to(device=device, dtype=dtype),
        t_video=t_batch, t_audio=t_batch, video_fps=clip.fps, run_block=run_block,
    )
    video_loss = F.mse_loss(video_pred, video_noise.to(device) - x0_v)
    audio_loss = F.mse_loss(audio_pred, audio_noise.to(device) - x0_a)
    return StepLoss(loss=video_loss + audio_loss, video_loss=float(video_loss.detach()),
                    audio_loss=float(audio_loss.detach()),
                    timestep=float(t), expert=expert_name)
