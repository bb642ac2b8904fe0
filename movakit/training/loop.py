"""The fine-tuning loop: AdamW with warmup + cosine decay, gradient accumulation and clipping, resumable state.

One optimizer update = `grad_accum` micro-batches of one clip each (the official batch size 1); each micro-batch's
loss is divided by grad_accum before backward; the gradient's global L2 norm is clipped before the update. The
learning rate follows `lr_at` per UPDATE: a linear warmup from 0.01·lr to lr over `warmup_steps`, then a cosine
to `min_lr` at `steps` (the official accelerate trainer steps its schedule per micro-batch and per process, so its
decay ends early or wraps around: docs/training.md, "Choices"). The micro-batch counter also picks the expert
(objective.TrainingTimesteps) and seeds its noise, and the clip order is a permutation per epoch drawn from the
seed, so `TrainState` (counters, optimizer state) is everything a resumed run needs to continue identically.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from movakit.training.memory import MemoryPlan, Placement
from movakit.training.objective import EncodedClip, TrainingTimesteps, flow_matching_loss


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # optimizer updates
    lr: float = 1e-4
    min_lr: float = 1e-6
    warmup_steps: int = 50
    grad_accum: int = 4
    max_grad_norm: float = 1.0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    seed: int = 42
    checkpoint_every: int = 100  # updates; 0 = only at the end
    memory: MemoryPlan = MemoryPlan()  # gradient checkpointing and offload (movakit.training.memory)

    def validate(self) -> None:
        checks = (("steps", self.steps >= 1), ("lr", self.lr > 0), ("min_lr", 0 <= self.min_lr <= self.lr),
                  ("warmup_steps", 0 <= self.warmup_steps < self.steps), ("grad_accum", self.grad_accum >= 1),
                  ("max_grad_norm", self.max_grad_norm > 0), ("weight_decay", self.weight_decay >= 0),
                  ("checkpoint_every", self.checkpoint_every >= 0))
        for name, ok in checks:
            if not ok:
                raise ValueError(f"{name}: {getattr(self, name)!r} is out of range")


@dataclass
class TrainState:
    step: int = 0  # optimizer updates done
    micro_step: int = 0  # micro-batches done
    optimizer: dict | None = None  # torch optimizer state_dict
    losses: list[float] = field(default_factory=list)  # mean loss of each update

    def to_dict(self) -> dict:
        return {"step": self.step, "micro_step": self.micro_step, "optimizer": self.optimizer, "losses": self.losses}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        return cls(step=int(d["step"]), micro_step=int(d["micro_step"]), optimizer=d["optimizer"],
                   losses=[float(x) for x in d["losses"]])


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    loss: float
    video_loss: float
    audio_loss: float
    lr: float
    elapsed_s: float
    eta_s: float


def lr_at(config: TrainConfig, step: int) -> float:
    """Learning rate of update `step` (0-based)."""
    if step < config.warmup_steps:
        return config.lr * (0.01 + 0.99 * step / config.warmup_steps)
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr + (config.lr - config.min_lr) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def clip_order(seed: int, epoch: int, count: int) -> list[int]:
    generator = torch.Generator(device="cpu").manual_seed(seed * 7919 + epoch)
    return torch.randperm(count, generator=generator).tolist()


def train(models, trainable: Sequence[torch.nn.Parameter], clips: Sequence[EncodedClip], config: TrainConfig,
          timesteps: TrainingTimesteps, *, state: TrainState | None = None,
          on_progress: Callable[[Progress], None] | None = None,
          on_checkpoint: Callable[[TrainState], None] | None = None,
          should_stop: Callable[[], bool] | None = None, placement: Placement | None = None) -> TrainState:
    """Run updates state.step..config.steps-1; returns the final state (also passed to on_checkpoint).

    With a `placement`, each micro-batch first places the components config.memory.step names for its expert
    (without one, the models stay where they are; offload "blocks" needs one).

    on_checkpoint is called every `checkpoint_every` updates and after the last; should_stop is asked after every
    update (a True ends the loop early, after a checkpoint).
    """
    config.validate()
    if not clips:
        raise ValueError("clips: nothing to train on")
    params = list(trainable)
    if not params or not all(p.requires_grad for p in params):
        raise ValueError("trainable: expected a non-empty list of parameters with requires_grad")
    state = state or TrainState()
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, eps=config.eps,
                                  weight_decay=config.weight_decay)
    if state.optimizer is not None:
        optimizer.load_state_dict(state.optimizer)
    start, first_step = time.perf_counter(), state.step
    while state.step < config.steps:
        lr = lr_at(config, state.step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        totals = [0.0, 0.0]
        for _ in range(config.grad_accum):
            epoch, position = divmod(state.micro_step, len(clips))
            clip = clips[clip_order(config.seed, epoch, len(clips))[position]]
            expert = timesteps.expert(state.micro_step)
            if placement is not None:
                placement.place(config.memory.step(expert), stream=config.memory.streams_blocks)
            device = getattr(models, expert).device
            with config.memory.saved_tensors(device):
                out = flow_matching_loss(models, clip, timesteps, state.micro_step, config.seed,
                                         run_block=config.memory.block_runner(placement))
            (out.loss / config.grad_accum).backward()
            totals[0] += out.video_loss / config.grad_accum
            totals[1] += out.audio_loss / config.grad_accum
            state.micro_step += 1
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        state.step += 1
        state.losses.append(totals[0] + totals[1])
        if on_progress is not None:
            elapsed = time.perf_counter() - start
            done = state.step - first_step
            on_progress(Progress(step=state.step, total=config.steps, loss=totals[0] + totals[1],
                                 video_loss=totals[0], audio_loss=totals[1], lr=lr, elapsed_s=elapsed,
                                 eta_s=elapsed / done * (config.steps - state.step)))
        last = state.step == config.steps
        stop = not last and should_stop is not None and should_stop()
        due = config.checkpoint_every and state.step % config.checkpoint_every == 0
        if on_checkpoint is not None and (last or stop or due):
            state.optimizer = optimizer.state_dict()
            on_checkpoint(state)
        if stop:
            break
    state.optimizer = optimizer.state_dict()
    return state
