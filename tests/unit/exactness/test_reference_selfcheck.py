"""The plain reference agrees with torch's own building blocks (so a mismatch against movakit is
movakit's, or a convention question, not an arithmetic slip in the reference)."""

import math

import mova_reference as ref
import sampler_reference as sref
import pytest
import torch
import torch.nn.functional as F

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_layer_norm_rms_norm_gelu_silu_match_torch():
    g = _gen()
    x = torch.randn(2, 5, 12, generator=g, dtype=F64)
    w = torch.randn(12, generator=g, dtype=F64)
    b = torch.randn(12, generator=g, dtype=F64)
    torch.testing.assert_close(ref.layer_norm(x, 1e-6), F.layer_norm(x, (12,), eps=1e-6))
    torch.testing.assert_close(ref.layer_norm(x, 1e-6, w, b), F.layer_norm(x, (12,), w, b, eps=1e-6))
    torch.testing.assert_close(ref.rms_norm(x, w, 1e-6), F.rms_norm(x, (12,), w, eps=1e-6))
    torch.testing.assert_close(ref.gelu_tanh(x), F.gelu(x, approximate="tanh"))
    torch.testing.assert_close(ref.silu(x), F.silu(x))


def test_attention_matches_sdpa():
    g = _gen(1)
    q = torch.randn(2, 7, 3 * 8, generator=g, dtype=F64)
    k = torch.randn(2, 5, 3 * 8, generator=g, dtype=F64)
    v = torch.randn(2, 5, 3 * 8, generator=g, dtype=F64)
    expect = F.scaled_dot_product_attention(
        q.view(2, 7, 3, 8).transpose(1, 2), k.view(2, 5, 3, 8).transpose(1, 2), v.view(2, 5, 3, 8).transpose(1, 2)
    ).transpose(1, 2).reshape(2, 7, 24)
    torch.testing.assert_close(ref.attention(q, k, v, 3), expect)


def test_sinusoid_layout_cos_then_sin():
    t = torch.tensor([0.0, 999.0], dtype=F64)
    e = ref.timestep_sinusoid(t, 8)
    assert torch.equal(e[0], torch.tensor([1.0] * 4 + [0.0] * 4, dtype=F64))
    # first frequency is 1 -> cos(999), sin(999); last is 10000^(-3/4)
    assert e[1, 0].item() == pytest.approx(math.cos(999.0))
    assert e[1, 4].item() == pytest.approx(math.sin(999.0))
    assert e[1, 3].item() == pytest.approx(math.cos(999.0 * 10000 ** (-3 / 4)))


def test_patchify_matches_conv3d_and_unpatchify_inverts_channel_fastest_layout():
    g = _gen(2)
    dims = ref.TowerDims(dim=10, num_heads=2, out_dim=3, freq_dim=8, eps=1e-6, patch_size=(1, 2, 2))
    w = torch.randn(10, 4, 1, 2, 2, generator=g, dtype=F64)
    b = torch.randn(10, generator=g, dtype=F64)
    x = torch.randn(2, 4, 3, 4, 6, generator=g, dtype=F64)
    tokens, grid = ref.patchify_video({"patch_embedding.weight": w, "patch_embedding.bias": b}, dims, x)
    conv = F.conv3d(x, w, b, stride=(1, 2, 2))  # (B, D, f, h, w)
    assert grid == (3, 2, 3)
    torch.testing.assert_close(tokens, conv.flatten(2).transpose(1, 2))
    # token vector = (pt, ph, pw, c) with c fastest
    toks = torch.randn(2, 18, 1 * 2 * 2 * 3, generator=g, dtype=F64)
    out = ref.unpatchify_video(dims, toks, grid)
    assert out.shape == (2, 3, 3, 4, 6)
    # token (f=1,h=0,w=2), sub-position (ph=1, pw=0), channel 2 -> pixel (f=1, y=1, x=4)
    tok = 1 * 6 + 0 * 3 + 2
    assert out[1, 2, 1, 1, 4] == toks[1, tok, (1 * 2 + 0) * 3 + 2]


def test_audio_patchify_matches_conv1d():
    g = _gen(3)
    dims = ref.TowerDims(dim=6, num_heads=1, out_dim=4, freq_dim=8, eps=1e-6, patch_size=(1,))
    w = torch.randn(6, 4, 1, generator=g, dtype=F64)
    b = torch.randn(6, generator=g, dtype=F64)
    x = torch.randn(2, 4, 9, generator=g, dtype=F64)
    tokens, n = ref.patchify_audio({"patch_embedding.weight": w, "patch_embedding.bias": b}, dims, x)
    torch.testing.assert_close(tokens, F.conv1d(x, w, b).transpose(1, 2))
    assert n == 9
    torch.testing.assert_close(ref.unpatchify_audio(dims, x.transpose(1, 2), 9), x)


def test_interleaved_rope_is_complex_multiplication():
    g = _gen(4)
    x = torch.randn(1, 5, 2 * 6, generator=g, dtype=F64)
    ang = torch.randn(5, 3, generator=g, dtype=F64)
    xc = torch.view_as_complex(x.view(1, 5, 2, 3, 2).contiguous())
    expect = torch.view_as_real(xc * torch.polar(torch.ones_like(ang), ang)[None, :, None, :]).reshape(1, 5, 12)
    torch.testing.assert_close(ref.apply_interleaved_rope(x, ang, 2), expect)


def test_video_rope_split_and_order():
    assert ref.video_rope_split(128) == (44, 42, 42)
    assert ref.video_rope_split(24) == (8, 8, 8)
    assert ref.video_rope_split(20) == (8, 6, 6)
    ang = ref.video_rope_angles(20, (2, 3, 4))
    assert ang.shape == (24, 10)
    # token (f=1, h=2, w=3) -> index 1*12 + 2*4 + 3
    row = ang[1 * 12 + 2 * 4 + 3]
    torch.testing.assert_close(row[:4], 1.0 * ref.rope_inv_freq(8))
    torch.testing.assert_close(row[4:7], 2.0 * ref.rope_inv_freq(6))
    torch.testing.assert_close(row[7:], 3.0 * ref.rope_inv_freq(6))


def test_rotate_half_rope_matches_pairwise_rotation_of_split_halves():
    g = _gen(5)
    x = torch.randn(1, 4, 8, generator=g, dtype=F64)
    cos, sin = ref.bridge_cos_sin(8, torch.tensor([0.0, 1.0, 2.5, 8.0], dtype=F64))
    out = ref.apply_rotate_half_rope(x, cos, sin, 1)
    # dims j and j + d/2 form the pair, rotated by pos * inv_freq[j]
    pos = torch.tensor([0.0, 1.0, 2.5, 8.0], dtype=F64)
    ang = pos[:, None] * ref.rope_inv_freq(8)[None]
    a, b = x[0, :, :4], x[0, :, 4:]
    torch.testing.assert_close(out[0, :, :4], a * ang.cos() - b * ang.sin())
    torch.testing.assert_close(out[0, :, 4:], b * ang.cos() + a * ang.sin())


def test_bridge_positions_at_24_fps():
    vpos, apos = ref.bridge_positions((3, 1, 2), 5, 24.0, 50.0)
    torch.testing.assert_close(vpos, torch.tensor([0, 0, 1, 1, 2, 2], dtype=F64) * (50.0 * 4 / 24.0))
    torch.testing.assert_close(apos, torch.arange(5, dtype=F64))


def test_scheduler_grid_matches_spec_values():
    t, s = sref.flow_match_grid(50, shift=5.0)
    assert t[0].item() == pytest.approx(1000.0, abs=1e-3)
    assert t[1].item() == pytest.approx(995.947, abs=1e-3)
    assert t[2].item() == pytest.approx(991.761, abs=1e-3)
    assert t[-3].item() == pytest.approx(251.005, abs=1e-3)
    assert t[-2].item() == pytest.approx(182.989, abs=1e-3)
    assert t[-1].item() == pytest.approx(105.035, abs=1e-3)
    torch.testing.assert_close(t, s * 1000)
