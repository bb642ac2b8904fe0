"""multi_head_attention's kernel choice: SDPA on the CPU (FlashAttention 3 only for bf16/fp16 on a Hopper GPU), and
the FlashAttention 3 call's (B, L, heads, head_dim) layout gives SDPA's result (checked with a stand-in kernel)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from movakit.models.layers import attention


def _fake_flash_attn_3(q, k, v):
    """FA3's contract on the CPU: (B, L, heads, head_dim) in and out, plus the log-sum-exp as older releases do."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2), torch.zeros(0)


def _qkv():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 7, 24, generator=g), torch.randn(2, 5, 24, generator=g), torch.randn(2, 5, 24, generator=g)


def test_cpu_tensors_use_sdpa_even_with_flash_attn_3_installed(monkeypatch):
    monkeypatch.setattr(attention, "FLASH_ATTN_3", _fake_flash_attn_3)
    q, _, _ = _qkv()
    assert attention.attention_kernel(q) == attention.attention_kernel(q.bfloat16()) == "sdpa"


def test_flash_attn_3_layout_matches_sdpa(monkeypatch):
    q, k, v = _qkv()
    expect = attention.multi_head_attention(q, k, v, num_heads=3)
    calls = []
    monkeypatch.setattr(attention, "FLASH_ATTN_3", lambda *qkv: calls.append(qkv) or _fake_flash_attn_3(*qkv))
    monkeypatch.setattr(attention, "attention_kernel", lambda q: "flash_attn_3")
    got = attention.multi_head_attention(q, k, v, num_heads=3)
    assert [tuple(t.shape) for t in calls[0]] == [(2, 7, 3, 8), (2, 5, 3, 8), (2, 5, 3, 8)]
    assert got.shape == (2, 7, 24)
    assert torch.allclose(got, expect, rtol=0, atol=1e-6)
