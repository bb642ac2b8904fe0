"""Elementwise helpers that keep big temporaries bounded.

Several MOVA ops are formed in a wider type than the activations (RoPE in float64, modulation and the bridge RoPE in
float32 for bf16 models). On a 720p clip a (B, 176 400, 5120) float64 temporary is ~14 GB per sample, so these ops
run over slices of the token axis and write into one output; the values are identical to the one-shot computation
(every token is independent).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

TOKEN_CHUNK = 8192  # tokens per slice: a float64-complex slice of (2, 8192, 5120) is ~1.3 GB


def opmath_dtype(dtype: torch.dtype) -> torch.dtype:
    """The type reduced-precision math is formed in: float32 for bf16/fp16/fp32, float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def map_token_chunks(x: torch.Tensor, fn: Callable[[torch.Tensor, int, int], torch.Tensor],
                     chunk: int = TOKEN_CHUNK) -> torch.Tensor:
    """out[:, s:e] = fn(x[:, s:e], s, e) for token slices of ``chunk``; x (B, L, D), out has x's shape and dtype."""
    n = x.shape[1]
    if n <= chunk:
        return fn(x, 0, n)
    out = torch.empty_like(x)
    for start in range(0, n, chunk):
        end = min(start + chunk, n)
        out[:, start:end] = fn(x[:, start:end], start, end)
    return out
