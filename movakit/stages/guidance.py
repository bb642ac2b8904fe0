"""Guidance of the denoise stage: which dual-tower forwards a step runs and how their velocities combine.

Single text CFG (the released sampler, and the default): two branches, both with the audio-video bridge on,
    v = v(neg) + s_text · (v(pos) − v(neg)).
Dual guidance (`sync_guidance_scale` set; docs/dual-guidance.md): guidance on the text AND on the bridge,
    v = v(neg, off) + s_text · (v(pos, off) − v(neg, off)) + s_sync · (v(pos, on) − v(pos, off)),
where "off" runs the towers with the bridge's condition scales at 0 (no cross-modal residual). This is the
compositional form; the MOVA paper names "dual CFG" without a formula we could find (see the doc).
With s_text = 1 the negative branch is not run (its term vanishes), as in single CFG.
Every velocity is float32. Video and audio follow the same rule, each with its own scales (`Scales`; by default the
audio's are the video's): a step runs the branches either modality needs.
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


@dataclass(frozen=True)
class Scales:
    """One modality's guidance: s_text, and s_sync for dual guidance (None = single text CFG)."""

    text: float
    sync: float | None = None


def branches(*modalities: Scales) -> tuple[Branch, ...]:
    """The forwards one step runs for the guidance of `modalities` (all single CFG or all dual), in batch order
    (POS_ON first, then by bridge setting)."""
    dual = {m.sync is not None for m in modalities}
    if len(dual) != 1:
        raise ValueError("guidance: every modality is single text CFG or every one dual, not a mix")
    text = any(m.text != 1.0 for m in modalities)
    if not dual.pop():
        return (POS_ON, NEG_ON) if text else (POS_ON,)
    return (POS_ON, POS_OFF, NEG_OFF) if text else (POS_ON, POS_OFF)


def combine(v: dict[Branch, torch.Tensor], scales: Scales) -> torch.Tensor:
    """One modality's guided velocity from the branch velocities `v` (module docstring)."""
    if scales.sync is None:
        if scales.text == 1.0:
            return v[POS_ON]
        return v[NEG_ON] + scales.text * (v[POS_ON] - v[NEG_ON])
    text = v[POS_OFF] if scales.text == 1.0 else v[NEG_OFF] + scales.text * (v[POS_OFF] - v[NEG_OFF])
    return text + scales.sync * (v[POS_ON] - v[POS_OFF])
