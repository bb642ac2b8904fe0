"""Flow-matching pair scheduler of MOVA (`scheduler/scheduler_config.json`, class `FlowMatchPairScheduler`).

docs/sampler.md#scheduler. The sigma grid for n steps with `extra_one_step` is n+1 equally spaced values from
`sigma_max` to `sigma_min` with the last dropped; the shift maps σ -> shift·σ / (1 + (shift-1)·σ); the
timestep is `num_train_timesteps`·σ'. The Euler step converts each timestep back to σ by nearest-neighbour
lookup in a `num_train_timesteps`-point grid built the same way at construction (exact for step counts that
divide 1000, snapped otherwise), and the last step goes to σ = 0.

The scheduler holds only its config and that fixed grid: nothing per request, so one instance is shared by
all requests. All arithmetic is float32, as in the official code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from movakit.config import config_from_dict

# Keys the official scheduler_config.json may carry that do not change the sampler (the official code's own
# per-call step count, diffusers bookkeeping). Ignored on purpose; any other unknown key is an error.
_IGNORED_KEYS = ("num_inference_steps",)


@dataclass(frozen=True)
class FlowMatchPairConfig:
    num_train_timesteps: int = 1000
    shift: float = 3.0  # code default; the MOVA release sets 5.0 in scheduler_config.json
    sigma_max: float = 1.0
    sigma_min: float = 0.003 / 1.002
    inverse_timesteps: bool = False
    extra_one_step: bool = False  # code default; the MOVA release sets true
    reverse_sigmas: bool = False
    exponential_shift: bool = False
    exponential_shift_mu: float | None = None
    shift_terminal: float | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "FlowMatchPairConfig":
        config = config_from_dict(cls, d, component="scheduler", ignored=_IGNORED_KEYS)
        config.validate()
        return config

    def validate(self) -> None:
        if isinstance(self.num_train_timesteps, bool) or not isinstance(self.num_train_timesteps, int):
            raise ValueError(f"scheduler config: num_train_timesteps must be an integer, got {self.num_train_timesteps!r}")
        for name in ("shift", "sigma_max", "sigma_min"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"scheduler config: {name} must be a number, got {value!r}")
        for name in ("inverse_timesteps", "extra_one_step", "reverse_sigmas", "exponential_shift"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"scheduler config: {name} must be true or false, got {getattr(self, name)!r}")
        if self.num_train_timesteps < 2:
            raise ValueError(f"scheduler config: num_train_timesteps must be >= 2, got {self.num_train_timesteps}")
        if self.shift <= 0:
            raise ValueError(f"scheduler config: shift must be > 0, got {self.shift}")
        if not 0.0 <= self.sigma_min < self.sigma_max <= 1.0:
            raise ValueError(
                f"scheduler config: need 0 <= sigma_min < sigma_max <= 1, got {self.sigma_min}, {self.sigma_max}"
            )
        # Flags the MOVA release leaves off; refusing them beats silently sampling a different schedule.
        for flag in ("inverse_timesteps", "reverse_sigmas", "exponential_shift"):
            if getattr(self, flag):
                raise NotImplementedError(f"scheduler config: {flag}=true is not supported")
        if self.shift_terminal is not None:
            raise NotImplementedError("scheduler config: shift_terminal is not supported")


class FlowMatchPairScheduler:
    """Timesteps and the Euler step of MOVA's flow-matching sampler (one shared instance, no per-request state)."""

    def __init__(self, config: FlowMatchPairConfig) -> None:
        config.validate()
        self.config = config
        # The lookup grid: timesteps and sigmas of a num_train_timesteps-step schedule.
        self._grid_sigmas = self._shifted_sigmas(config.num_train_timesteps)
        self._grid_timesteps = self._grid_sigmas * config.num_train_timesteps

    @classmethod
    def from_config(cls, d: dict) -> "FlowMatchPairScheduler":
        return cls(FlowMatchPairConfig.from_dict(d))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "FlowMatchPairScheduler":
        """Read `<folder>/scheduler_config.json` (the checkpoint's `scheduler/` folder)."""
        path = Path(folder) / "scheduler_config.json"
        if not path.is_file():
            raise FileNotFoundError(f"scheduler config not found: {path}")
        return cls.from_config(json.loads(path.read_text()))

    def _shifted_sigmas(self, num_steps: int) -> torch.Tensor:
        c = self.config
        if c.extra_one_step:
            sigmas = torch.linspace(c.sigma_max, c.sigma_min, num_steps + 1, dtype=torch.float32)[:-1]
        else:
            sigmas = torch.linspace(c.sigma_max, c.sigma_min, num_steps, dtype=torch.float32)
        return c.shift * sigmas / (1 + (c.shift - 1) * sigmas)

    def timesteps(self, num_steps: int) -> torch.Tensor:
        """The n sampling timesteps (float32, descending from 1000·σ_max), e.g. 1000, 995.947, … for n=50."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        return self._shifted_sigmas(num_steps) * self.config.num_train_timesteps

    def pairs(self, num_steps: int) -> torch.Tensor:
        """(n, 2) (video timestep, audio timestep): two identical columns, as in the official release."""
        t = self.timesteps(num_steps)
        return torch.stack([t, t], dim=1)

    def sigma_of(self, t: torch.Tensor | float) -> torch.Tensor:
        """σ of a timestep: nearest neighbour in the num_train_timesteps-point grid (0-dim float32 tensor)."""
        t = torch.as_tensor(t, dtype=torch.float32).reshape(())
        index = torch.argmin((self._grid_timesteps - t).abs())
        return self._grid_sigmas[index]

    def step(
        self,
        sample: torch.Tensor,
        velocity: torch.Tensor,
        t_from: torch.Tensor | float,
        t_to: torch.Tensor | float | None,
    ) -> torch.Tensor:
        """One Euler step x + v·(σ(t_to) − σ(t_from)); t_to None means the final step to σ = 0.

        `sample` and `velocity` must be float32 (the sampler keeps latents in float32).
        """
        if sample.dtype != torch.float32 or velocity.dtype != torch.float32:
            raise TypeError(f"step: sample and velocity must be float32, got {sample.dtype}, {velocity.dtype}")
        if sample.shape != velocity.shape:
            raise ValueError(f"step: sample {tuple(sample.shape)} and velocity {tuple(velocity.shape)} differ")
        sigma_from = self.sigma_of(t_from)
        sigma_to = torch.zeros((), dtype=torch.float32) if t_to is None else self.sigma_of(t_to)
        delta = (sigma_to - sigma_from).to(sample.device)
        return sample + velocity * delta
