"""Timestep embedding of the Wan/MOVA DiTs (docs/model.md#dit-block).

The raw timestep t in [0, 1000] is rounded to float32 (the official sampler passes float32 timesteps), expanded to a
[cos | sin] sinusoid in float64, rounded to float32, and fed through the time MLPs in float32 even when the weights
are bf16 (the official code relies on a CUDA float32 autocast for this; here the weights are upcast explicitly).
Callers cast the result to the model dtype. (A float64 model keeps the MLPs in float64.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from movakit.models.layers.pointwise import opmath_dtype

TIMESTEP_BASE = 10000


def sinusoidal_timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) timesteps -> (B, 2*(dim//2)) float32 = [cos(t*f_i) | sin(t*f_i)], f_i = 10000^(-i/(dim//2)), in float64."""
    if t.ndim != 1:
        raise ValueError(f"timestep must have shape (B,), got {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.pow(TIMESTEP_BASE, -torch.arange(half, dtype=torch.float64, device=t.device).div(half))
    angles = torch.outer(t.to(torch.float32).to(torch.float64), freqs)  # (B, half)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).to(torch.float32)


def mlp_fp32(mlp: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run a Sequential of Linear / SiLU layers in float32 whatever the weights' dtype (weights upcast per call);
    a float64 model (tests only) stays in float64."""
    wide = opmath_dtype(mlp[-1].weight.dtype)
    x = x.to(wide)
    for layer in mlp:
        if isinstance(layer, nn.Linear):
            bias = None if layer.bias is None else layer.bias.to(wide)
            x = F.linear(x, layer.weight.to(wide), bias)
        elif isinstance(layer, nn.SiLU):
            x = F.silu(x)
        else:
            raise TypeError(f"mlp_fp32: unsupported layer {type(layer).__name__}")
    return x
