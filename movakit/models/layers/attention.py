"""Attention layers of the MOVA DiTs: unmasked multi-head SDPA, self-attention with interleaved RoPE, and the text
cross-attention. Both q and k are RMS-normalised over the whole hidden size (torch.nn.RMSNorm, learnable weight)
before being split into heads (MOVA-SPEC §2.6, §10.3). No masks anywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from movakit.models.layers.rope import apply_rope_interleaved
from movakit.parallel import active_sequence_parallel


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int,
                         kv_stream: str | None = None) -> torch.Tensor:
    """Unmasked attention, scale 1/sqrt(head_dim). q (B, Lq, D), k/v (B, Lk, D) -> (B, Lq, D).

    kv_stream names the token stream k and v come from ("video", "audio"; None for the text context): under
    movakit.parallel.sequence_parallel the tensors are this rank's chunks and the attention is split there."""
    split = active_sequence_parallel()
    if split is not None:
        return split.attention(q, k, v, num_heads, kv_stream, F.scaled_dot_product_attention)
    b, lq, d = q.shape
    lk = k.shape[1]
    head_dim = d // num_heads
    qh = q.reshape(b, lq, num_heads, head_dim).transpose(1, 2)  # (B, heads, Lq, head_dim)
    kh = k.reshape(b, lk, num_heads, head_dim).transpose(1, 2)  # (B, heads, Lk, head_dim)
    vh = v.reshape(b, lk, num_heads, head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(qh, kh, vh)  # (B, heads, Lq, head_dim)
    return out.transpose(1, 2).reshape(b, lq, d)


class QKNormAttention(nn.Module):
    """Projections shared by every MOVA attention: q from the query stream (dim), k/v from the key stream (kv_dim),
    all linears with bias, q and k RMS-normalised over the whole hidden size, output projection. Subclasses say
    where the streams come from and which RoPE (if any) they get."""

    def __init__(self, dim: int, num_heads: int, eps: float, kv_dim: int | None = None,
                 kv_stream: str | None = None):
        super().__init__()
        kv_dim = dim if kv_dim is None else kv_dim
        self.num_heads = num_heads
        self.kv_stream = kv_stream  # the token stream keys/values come from (None: the text context)
        # 1. projections (all with bias)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv_dim, dim)
        self.v = nn.Linear(kv_dim, dim)
        self.o = nn.Linear(dim, dim)
        # 2. qk-norm over the whole hidden size
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)


class SelfAttention(QKNormAttention):
    """DiT self-attention: q/k RMSNorm over D, interleaved float64 RoPE on q and k, SDPA, output projection."""

    def forward(self, x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        # 1. projections + 2. qk-norm
        q = self.norm_q(self.q(x))  # (B, L, D)
        k = self.norm_k(self.k(x))
        v = self.v(x)
        # RoPE (complex128 freqs (L, 1, head_dim/2)), then unmasked attention
        q = apply_rope_interleaved(q, freqs, self.num_heads)
        k = apply_rope_interleaved(k, freqs, self.num_heads)
        return self.o(multi_head_attention(q, k, v, self.num_heads, self.kv_stream))


class TextCrossAttention(QKNormAttention):
    """DiT text cross-attention: queries from the (already layer-normed) stream, keys/values from the text context.

    The keys and values depend on the text context only, so they are computed apart (``context_kv``) and a job
    that runs many steps on one context computes them once (DiTTower.text_kv)."""

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context (B, L_text, D) embedded -> (k, v), each (B, L_text, D); k RMS-normalised."""
        return self.norm_k(self.k(context)), self.v(context)

    def forward(self, x: torch.Tensor, context_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        # x (B, L, D), context_kv from context_kv(): no RoPE, no mask (pad positions of the text are attended to)
        k, v = context_kv
        q = self.norm_q(self.q(x))
        return self.o(multi_head_attention(q, k, v, self.num_heads))
