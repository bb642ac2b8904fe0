"""Guidance of the denoise stage: which dual-tower forwards a step runs and how their velocities combine.

Single text CFG (the released sampler, and the default): two branches, both with the audio-video bridge on,
    v = v(neg) + s_text · (v(pos) − v(neg)).
Dual guidance (`sync_guidance_scale` set; docs/dual-guidance.md): guidance on the text AND on the bridge,
    v = v(neg, off) + s_text · (v(pos, off) − v(neg, off)) + s_sync · (v(pos, on) − v(pos, off)),
where "off" runs the towers with the bridge's condition scales at 0 (no cross-modal residual). This is the
compositional form; the MOVA paper names "dual CFG" without a formula we could find (see the doc).
With s_text = 1 the negative branch is not run (its term vanishes), as in single CFG.
Every velocity is float32; the same rule applies to video and audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Branch:
    """One forward of a step: the positive or the negative prompt, with the bridge on or off."""

    negative: bool
    bridge: bool


POS_ON = Branch(negative=False, bridge=True)
NEG_ON = Branch(negative=True, bridge=True)
POS_OFF = Branch(negative=False, bridge=False)
NEG_OFF = Branch(negative=True, bridge=False)


def branches(guidance_scale: float, sync_guidance_scale: float | None) -> tuple[Branch, ...]:
    """The forwards one step runs, in batch order (POS_ON first, then by bridge setting)."""
    text = guidance_scale != 1.0
    if sync_guidance_scale is None:
        return (POS_ON, NEG_ON) if text else (POS_ON,)
    return (POS_ON, POS_OFF, NEG_OFF) if text else (POS_ON, POS_OFF)


def combine(v: dict[Branch, torch.Tensor], guidance_scale: float, sync_guidance_scale: float | None) -> torch.Tensor:
    """The guided velocity from the branch velocities `v` (module docstring)."""
    if sync_guidance_scale is None:
        if guidance_scale == 1.0:
            return v[POS_ON]
        return v[NEG_ON] + guidance_scale * (v[POS_ON] - v[NEG_ON])
    text = v[POS_OFF] if guidance_scale == 1.0 else v[NEG_OFF] + guidance_scale * (v[POS_OFF] - v[NEG_OFF])
    return text + sync_guidance_scale * (v[POS_ON] - v[POS_OFF])
