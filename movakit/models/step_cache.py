"""Step caching (TeaCache-style, off by default): skip the blocks of the dual-tower forward at a denoise step whose
input barely differs from the last step's, and add the residual the blocks made when they last ran.

The signal is what TeaCache reads for Wan: the modulated input of the first video block, LN(x) * (1 + scale) +
shift, which moves with the latents and with the timestep. Per step, its relative L1 change against the previous
step, mean|m_t - m_{t-1}| / mean|m_{t-1}|, is added to an accumulator; while the sum stays below the threshold the
blocks are skipped and the streams become (tokens + stored residual) for video and audio alike; once it reaches the
threshold the blocks run, their residual (output - input, per stream) is stored and the sum restarts at 0. The
first forward always runs, and so does the first one after a change of video expert or of the token shapes. The
threshold is the raw accumulated change: TeaCache also rescales it by a polynomial fitted per model on real
checkpoints, which was not fitted here.

Every skipped step changes the outputs (a higher threshold skips more and drifts more): the latents no longer
equal the sampler's. One StepCache serves one guidance branch (or one batch of branches) of one job; it holds the
residuals of both streams (the size of the tokens: ~1.8 GB per branch for a 720p clip in bf16).
"""

from __future__ import annotations

import torch


class StepCache:
    """The state of one guidance branch across the steps of a job; `threshold` > 0 (module docstring)."""

    def __init__(self, threshold: float):
        if not threshold > 0:
            raise ValueError(f"step cache threshold must be > 0, got {threshold!r}")
        self.threshold = float(threshold)
        self.evaluated = 0  # forwards that ran the blocks
        self.reused = 0  # forwards that reused the stored residual instead
        self._signal: torch.Tensor | None = None
        self._accumulated = 0.0
        self._residual: tuple[torch.Tensor, torch.Tensor] | None = None
        self._owner: object = None

    def reusable(self, signal: torch.Tensor, owner: object) -> bool:
        """Record this step's signal (the first video block's modulated input) for the blocks of `owner` (the video
        expert); True when the stored residual may stand in for the blocks."""
        previous, self._signal = self._signal, signal
        if previous is None or self._residual is None or owner is not self._owner or previous.shape != signal.shape:
            return False
        change = ((signal - previous).abs().mean() / previous.abs().mean()).item()
        self._accumulated += change
        return self._accumulated < self.threshold

    def store(self, owner: object, video: torch.Tensor, audio: torch.Tensor) -> None:
        """The blocks ran: keep their residuals (output - input of each stream) and restart the sum."""
        self._residual, self._owner, self._accumulated = (video, audio), owner, 0.0
        self.evaluated += 1

    def residual(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored (video, audio) residuals, for a step that skips the blocks."""
        assert self._residual is not None, "reusable() said no residual is stored"
        self.reused += 1
        return self._residual
