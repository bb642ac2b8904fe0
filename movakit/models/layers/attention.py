"""Attention layers of the MOVA DiTs: unmasked multi-head attention, self-attention with interleaved RoPE, and the
text cross-attention. Both q and k are RMS-normalised over the whole hidden size (torch.nn.RMSNorm, learnable weight)
before being split into heads (docs/model.md#dit-block). No masks anywhere.

The kernel (attention_kernel): FlashAttention 3 (package ``flash_attn_interface``) for bf16/fp16 on a Hopper GPU when
it is installed, as the official code prefers it; otherwise PyTorch's scaled_dot_product_attention, which picks its
flash / cuDNN / memory-efficient kernel on CUDA. Both compute exact attention (they differ in rounding only).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from movakit.models.layers.pointwise import opmath_dtype
from movakit.models.layers.rope import apply_rope_interleaved
from movakit.parallel import active_sequence_parallel


def _flash_attn_3():
    try:
        from flash_attn_interface import flash_attn_func
    except ImportError:
        return None
    return flash_attn_func


FLASH_ATTN_3 = _flash_attn_3()  # flash_attn_func((B, L, heads, head_dim) q, k, v) or None


@functools.lru_cache(maxsize=None)
def _is_hopper(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device)[0] == 9


def attention_kernel(q: torch.Tensor) -> str:
    """"flash_attn_3" when it is installed and q is bf16/fp16 on a Hopper GPU, else "sdpa"."""
    if FLASH_ATTN_3 is not None and q.is_cuda and q.dtype in (torch.bfloat16, torch.float16) and _is_hopper(q.device):
        return "flash_attn_3"
    return "sdpa"


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int,
                         kv_stream: str | None = None) -> torch.Tensor:
    """Unmasked attention, scale 1/sqrt(head_dim). q (B, Lq, D), k/v (B, Lk, D) -> (B, Lq, D).

    kv_stream names the token stream k and v come from ("video", "audio"; None for the text context): under
    movakit.parallel.sequence_parallel the tensors are this rank's chunks and the attention is split there (with
    SDPA)."""
    split = active_sequence_parallel()
    if split is not None:
        return split.attention(q, k, v, num_heads, kv_stream, F.scaled_dot_product_attention)
    b, lq, d = q.shape
    lk = k.shape[1]
    head_dim = d // num_heads
    if attention_kernel(q) == "flash_attn_3":
        out = FLASH_ATTN_3(q.reshape(b, lq, num_heads, head_dim), k.reshape(b, lk, num_heads, head_dim),
                           v.reshape(b, lk, num_heads, head_dim))
        out = out[0] if isinstance(out, tuple) else out  # some FA3 releases also return the log-sum-exp
        return out.reshape(b, lq, d)
    qh = q.reshape(b, lq, num_heads, head_dim).transpose(1, 2)  # (B, heads, Lq, head_dim)
    kh = k.reshape(b, lk, num_heads, head_dim).transpose(1, 2)  # (B, heads, Lk, head_dim)
    vh = v.reshape(b, lk, num_heads, head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(qh, kh, vh)  # (B, heads, Lq, head_dim)
    return out.transpose(1, 2).reshape(b, lq, d)


def rms_norm(norm: nn.RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """norm(x). For float32/float64 activations the sum of squares is one reduction (vector_norm, accumulated in
    double on the CPU) followed by two products, where nn.RMSNorm's CPU kernel makes four passes over x; the values
    agree within float32 rounding. bf16/fp16 go through the module (its float32 math, rounded once)."""
    if x.dtype != opmath_dtype(x.dtype):
        return norm(x)
    eps = torch.finfo(x.dtype).eps if norm.eps is None else norm.eps
    inv_rms = torch.rsqrt(torch.linalg.vector_norm(x, dim=-1, keepdim=True).square() / x.shape[-1] + eps)
    return x * inv_rms * norm.weight


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
        q = rms_norm(self.norm_q, self.q(x))  # (B, L, D)
        k = rms_norm(self.norm_k, self.k(x))
        v = self.v(x)
        # RoPE (complex freqs (L, 1, head_dim/2): complex64 from the forward, rope.interleaved_table), then attention
        q = apply_rope_interleaved(q, freqs, self.num_heads)
        k = apply_rope_interleaved(k, freqs, self.num_heads)
        return self.o(multi_head_attention(q, k, v, self.num_heads, self.kv_stream))


class TextCrossAttention(QKNormAttention):
    """DiT text cross-attention: queries from the (already layer-normed) stream, keys/values from the text context.

    The keys and values depend on the text context only, so they are computed apart (``context_kv``) and a job
    that runs many steps on one context computes them once (DiTTower.text_kv)."""

    def context_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context (B, L_text, D) embedded -> (k, v), each (B, L_text, D); k RMS-normalised."""
        return rms_norm(self.norm_k, self.k(context)), self.v(context)

    def forward(self, x: torch.Tensor, context_kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        # x (B, L, D), context_kv from context_kv(): no RoPE, no mask (pad positions of the text are attended to)
        k, v = context_kv
        q = rms_norm(self.norm_q, self.q(x))
        return self.o(multi_head_attention(q, k, v, self.num_heads))
