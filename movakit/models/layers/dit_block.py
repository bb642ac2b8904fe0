"""The Wan DiT block, output head and the parts both MOVA towers share (docs/model.md#dit-block,
docs/model.md#audio-dit).

Block, per token stream x (B, L, D), with t_mod (B, 6, D) in the model dtype:
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation (1, 6, D) + t_mod
    x = x + gate_msa * SelfAttn(LN1(x) * (1 + scale_msa) + shift_msa, RoPE)
    x = x + TextCrossAttn(LN3(x), context)                     # LN3 has weight and bias; no gate
    x = x + gate_mlp * FFN(LN2(x) * (1 + scale_mlp) + shift_mlp) # FFN = Linear, GELU(tanh), Linear
Head: LN(x) * (1 + scale) + shift with (shift, scale) = head.modulation (1, 2, D) + t_emb[:, None] -> (B, 2, D)
(the per-sample broadcast that keeps batch > 1 correct, docs/model.md#dit-block), then Linear(D, out_dim * prod(patch)).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from movakit.models.layers.attention import SelfAttention, TextCrossAttention
from movakit.models.layers.pointwise import map_token_chunks, opmath_dtype
from movakit.models.layers.rope import LastTable, interleaved_table
from movakit.models.layers.text_memo import TextMemo
from movakit.models.layers.timestep_embedding import mlp_fp32, sinusoidal_timestep_embedding


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift. For bf16/fp16, formed in float32 and rounded once (as the official compiled kernel
    does); in float32/float64 one fused multiply-add. x (B, L, D), shift/scale (B, 1, D)."""
    wide = opmath_dtype(x.dtype)
    if wide == x.dtype:
        return torch.addcmul(shift, x, 1 + scale)
    one_plus_scale, shift_w = 1 + scale.to(wide), shift.to(wide)
    return map_token_chunks(x, lambda xs, _s, _e: (xs.to(wide) * one_plus_scale + shift_w).to(x.dtype))


def norm_modulate(norm: nn.LayerNorm, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """modulate(norm(x), shift, scale) for a LayerNorm without affine. A float32/float64 batch of one is a single
    layer_norm call with (1 + scale, shift) as its affine parameters (the same values within float32 rounding)."""
    if x.shape[0] == 1 and x.dtype == opmath_dtype(x.dtype):
        return F.layer_norm(x, norm.normalized_shape, (1 + scale).reshape(-1), shift.reshape(-1), norm.eps)
    return modulate(norm(x), shift, scale)


class DiTBlock(nn.Module):
    """One Wan DiT block; key names self_attn.*, cross_attn.*, norm3.*, ffn.{0,2}.*, modulation."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, eps: float, stream: str):
        super().__init__()
        # 1. self-attention (over the tower's own token stream), 2. text cross-attention
        self.self_attn = SelfAttention(dim, num_heads, eps, kv_stream=stream)
        self.cross_attn = TextCrossAttention(dim, num_heads, eps)
        # 3. norms: 1 and 2 are modulated (no affine), 3 (before cross-attention) has weight and bias
        self.norm1 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        # 4. feed-forward
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        # 5. per-block modulation added to the shared t_mod
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, context_kv: tuple[torch.Tensor, torch.Tensor], t_mod: torch.Tensor,
                freqs: torch.Tensor) -> torch.Tensor:
        # x (B, L, D); context_kv = cross_attn.context_kv(embedded context); t_mod (B, 6, D);
        # freqs complex (L, 1, head_dim/2) (DiTTower.rope_table)
        mod = self.modulation.to(x.dtype) + t_mod.to(x.dtype)  # (B, 6, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)  # each (B, 1, D)
        # 1. self-attention, gated (x + gate * y as one fused multiply-add)
        x = torch.addcmul(x, gate_msa, self.self_attn(norm_modulate(self.norm1, x, shift_msa, scale_msa), freqs))
        # 2. text cross-attention, ungated
        x = x + self.cross_attn(self.norm3(x), context_kv)
        # 4. feed-forward, gated
        return torch.addcmul(x, gate_mlp, self.ffn(norm_modulate(self.norm2, x, shift_mlp, scale_mlp)))

    def modulated_input(self, x: torch.Tensor, t_mod: torch.Tensor) -> torch.Tensor:
        """The self-attention's input, LN1(x) * (1 + scale_msa) + shift_msa (the step cache's signal)."""
        mod = self.modulation.to(x.dtype) + t_mod.to(x.dtype)  # (B, 6, D)
        return norm_modulate(self.norm1, x, mod[:, 0:1], mod[:, 1:2])


class Head(nn.Module):
    """Output head; keys head.head.{weight,bias} and head.modulation (1, 2, D)."""

    def __init__(self, dim: int, out_features: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.head = nn.Linear(dim, out_features)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        # x (B, L, D); t_emb (B, D) = time_embedding output (not t_mod)
        mod = self.modulation.to(x.dtype) + t_emb.to(x.dtype)[:, None, :]  # (B, 2, D)
        shift, scale = mod.chunk(2, dim=1)  # each (B, 1, D)
        if x.dtype == opmath_dtype(x.dtype):
            return self.head(norm_modulate(self.norm, x, shift, scale))  # (B, L, out_features)
        return self.head(self.norm(x) * (1 + scale) + shift)


def call_directly(fn: Callable, *args, **kwargs):
    """The block runner that just calls (models.dual_tower.BlockRunner)."""
    return fn(*args, **kwargs)


class DiTTower(nn.Module):
    """What the video and audio DiTs share: embeddings, blocks and head, built around a tower-specific patch embedding.

    Registration order (patch_embedding, text_embedding, time_embedding, time_projection, blocks, head) matches the
    official modules, so state_dict() lists keys in the official order.
    """

    def __init__(self, config, conv: type[nn.Conv1d] | type[nn.Conv3d], stream: str):
        """config: a VideoDiTConfig or AudioDiTConfig (same field names); conv: the patch embedding's class."""
        super().__init__()
        self.config = config
        dim, text_dim, freq_dim, ffn_dim = config.dim, config.text_dim, config.freq_dim, config.ffn_dim
        num_heads, eps, patch = config.num_heads, config.eps, config.patch_size
        self.dim = dim
        self.freq_dim = freq_dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        # 1. patch embedding (Conv3d for video, Conv1d for audio), kernel = stride = patch
        self.patch_embedding = conv(config.in_dim, dim, kernel_size=patch, stride=patch)
        # 2. text embedding: Linear(text_dim, D), GELU(tanh), Linear(D, D)
        self.text_embedding = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        # 3. time embedding: Linear(freq_dim, D), SiLU, Linear(D, D); projection SiLU, Linear(D, 6D)
        self.time_embedding = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        # 4. blocks, 5. head
        self.blocks = nn.ModuleList([DiTBlock(dim, num_heads, ffn_dim, eps, stream) for _ in range(config.num_layers)])
        self.head = Head(dim, config.out_dim * math.prod(patch), eps)
        self._text_memo = TextMemo()
        self._rope_table = LastTable()

    @property
    def dtype(self) -> torch.dtype:
        """The model dtype (that of the patch embedding weight); activations run in it."""
        return self.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embedding.weight.device

    def time_embedding_fp32(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t (B,) -> (t_emb (B, D), t_mod (B, 6, D)), float32 whatever the weight dtype (float64 for a float64 model)."""
        sinusoid = sinusoidal_timestep_embedding(t.to(self.device), self.freq_dim)  # (B, freq_dim) float32
        t_emb = mlp_fp32(self.time_embedding, sinusoid)  # (B, D)
        t_mod = mlp_fp32(self.time_projection, t_emb).unflatten(1, (6, self.dim))  # (B, 6, D)
        return t_emb, t_mod

    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        """context (B, L_text, text_dim) -> (B, L_text, D) in the model dtype."""
        return self.text_embedding(context.to(device=self.device, dtype=self.dtype))

    def text_kv(self, context: torch.Tensor, run: Callable = call_directly) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """context (B, L_text, text_dim) -> every block's cross-attention (k, v), each (B, L_text, D).

        Memoised (layers/text_memo.py): the steps of a job pass the same context tensor, so only the first computes.
        `run(fn, *args)` calls each block's computation (fine-tuning passes its block runner: models.dual_tower).
        """
        weights = [*self.text_embedding.parameters()]
        for block in self.blocks:
            attn = block.cross_attn
            weights += [attn.k.weight, attn.k.bias, attn.v.weight, attn.v.bias, attn.norm_k.weight]

        def compute() -> list[tuple[torch.Tensor, torch.Tensor]]:
            ctx = self.embed_text(context)
            return [run(block.cross_attn.context_kv, ctx) for block in self.blocks]

        modules = [*self.text_embedding.modules(), *(m for block in self.blocks for m in block.cross_attn.modules())]
        return self._text_memo.get(context, weights, compute, modules)

    def rope_table(self, grid: tuple[int, ...]) -> torch.Tensor:
        """rope_freqs(grid) on the model's device in the complex type the rotation is formed in
        (rope.interleaved_table), computed once while the grid repeats (the steps of a job)."""
        key = (tuple(grid), self.device, self.dtype)
        return self._rope_table.get(key, lambda: interleaved_table(self.rope_freqs(grid), self.dtype))

    def run_blocks(self, x: torch.Tensor, text_kv: list[tuple[torch.Tensor, torch.Tensor]], t_mod: torch.Tensor,
                   freqs: torch.Tensor) -> torch.Tensor:
        for block, kv in zip(self.blocks, text_kv, strict=True):
            x = block(x, kv, t_mod, freqs)
        return x

    # The tower-specific pieces: each subclass defines patchify(x) -> (tokens, grid), rope_freqs(grid) and
    # unpatchify(tokens, grid).

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The tower alone (no bridge). x (B, in_dim, *spatial), timestep (B,), context (B, L_text, text_dim)
        -> velocity (B, out_dim, *spatial) float32."""
        if timestep.shape != (x.shape[0],):
            raise ValueError(f"timestep must have shape ({x.shape[0]},), got {tuple(timestep.shape)}")
        # 1. time embeddings in float32, then the model dtype
        t_emb, t_mod = self.time_embedding_fp32(timestep)
        t_emb, t_mod = t_emb.to(self.dtype), t_mod.to(self.dtype)
        # 2. text (keys and values of every block), 3. patches + RoPE table
        text_kv = self.text_kv(context)
        tokens, grid = self.patchify(x)
        freqs = self.rope_table(grid)
        # 4. blocks, 5. head
        tokens = self.run_blocks(tokens, text_kv, t_mod, freqs)
        return self.unpatchify(self.head(tokens, t_emb), grid).float()
