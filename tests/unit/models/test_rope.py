"""RoPE: the two conventions of MOVA (interleaved float64 in the DiTs, rotate-half float32 in the bridge)."""

from __future__ import annotations

import math

import pytest
import torch

from movakit.models.layers import rope


@pytest.mark.parametrize("head_dim, parts", [(128, (44, 42, 42)), (24, (8, 8, 8)), (12, (4, 4, 4)), (20, (8, 6, 6))])
def test_video_split_follows_the_official_rule(head_dim, parts):
    assert rope.video_rope_split(head_dim) == parts
    assert sum(parts) == head_dim


@pytest.mark.parametrize("head_dim", [10, 16, 2])  # 10 -> 4/3/3, 16 -> 6/5/5, 2 -> h = w = 0
def test_video_split_rejects_odd_parts(head_dim):
    with pytest.raises(ValueError, match=f"head_dim {head_dim}"):
        rope.video_rope_split(head_dim)


def test_video_table_concatenates_t_h_w_parts_with_their_own_frequencies():
    head_dim, grid = 20, (3, 2, 4)  # parts 8 / 6 / 6 -> 4 + 3 + 3 complex factors
    freqs = rope.video_rope_freqs(head_dim, grid)
    assert freqs.dtype == torch.complex128 and freqs.shape == (3 * 2 * 4, 1, 10)
    f, h, w = 2, 1, 3
    token = freqs[(f * 2 + h) * 4 + w, 0]  # tokens are flattened in (f, h, w) order
    expected = []
    for pos, d in ((f, 8), (h, 6), (w, 6)):
        expected += [complex(math.cos(pos * 10000 ** (-2 * j / d)), math.sin(pos * 10000 ** (-2 * j / d)))
                     for j in range(d // 2)]
    torch.testing.assert_close(token, torch.tensor(expected, dtype=torch.complex128), rtol=1e-14, atol=1e-14)


def test_audio_table_is_plain_1d_over_the_whole_head():
    freqs = rope.audio_rope_freqs(12, 5)
    assert freqs.shape == (5, 1, 6) and freqs.dtype == torch.complex128
    expected = torch.tensor([[complex(math.cos(p * 10000 ** (-2 * j / 12)), math.sin(p * 10000 ** (-2 * j / 12)))
                              for j in range(6)] for p in range(5)], dtype=torch.complex128)
    torch.testing.assert_close(freqs[:, 0], expected, rtol=1e-14, atol=1e-14)


def test_tables_refuse_positions_past_the_official_lengths():
    with pytest.raises(ValueError, match="1024"):
        rope.video_rope_freqs(24, (1025, 1, 1))
    with pytest.raises(ValueError, match="16384"):
        rope.audio_rope_freqs(24, 16385)


def test_interleaved_rotation_is_identity_at_zero_and_keeps_pair_norms():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 2 * 12, generator=gen)  # 2 heads of 12
    freqs = rope.audio_rope_freqs(12, 5)
    out = rope.apply_rope_interleaved(x, freqs, num_heads=2)
    assert out.dtype == x.dtype
    torch.testing.assert_close(out[:, 0], x[:, 0])  # position 0: no rotation
    pair_norm = lambda t: t.reshape(2, 5, 12, 2).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(pair_norm(out), pair_norm(x))
    assert not torch.allclose(out[:, 1:], x[:, 1:])


def test_interleaved_rope_gives_relative_position_scores():
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(1, 1, 12, dtype=torch.float64, generator=gen).expand(1, 8, 12).contiguous()
    k = torch.randn(1, 1, 12, dtype=torch.float64, generator=gen).expand(1, 8, 12).contiguous()
    freqs = rope.audio_rope_freqs(12, 8)
    rq = rope.apply_rope_interleaved(q, freqs, 1)[0]
    rk = rope.apply_rope_interleaved(k, freqs, 1)[0]
    scores = rq @ rk.T  # (8, 8): depends on i - j only
    for offset in range(-3, 4):
        diag = torch.diagonal(scores, offset)
        torch.testing.assert_close(diag, diag[:1].expand_as(diag), rtol=1e-12, atol=1e-12)


def test_interleaved_and_rotate_half_pair_different_channels():
    """Same angles, same vector e_0: interleaved rotates channel 0 into 1, rotate-half into head_dim/2."""
    head_dim, pos = 8, 3
    x = torch.zeros(1, pos + 1, head_dim)
    x[0, pos, 0] = 1.0
    inter = rope.apply_rope_interleaved(x, rope.audio_rope_freqs(head_dim, pos + 1), num_heads=1)[0, pos]
    cos, sin = rope.rotate_half_cos_sin(torch.arange(pos + 1, dtype=torch.float32), head_dim, torch.float32)
    half = rope.apply_rope_rotate_half(x, cos, sin, num_heads=1)[0, pos]
    angle = torch.tensor(float(pos))  # j = 0: frequency 1
    expected_inter = torch.zeros(head_dim)
    expected_inter[0], expected_inter[1] = torch.cos(angle), torch.sin(angle)
    expected_half = torch.zeros(head_dim)
    expected_half[0], expected_half[head_dim // 2] = torch.cos(angle), torch.sin(angle)
    torch.testing.assert_close(inter, expected_inter)
    torch.testing.assert_close(half, expected_half)
    assert not torch.allclose(inter, half)


def test_bridge_positions_put_video_frames_on_the_audio_time_axis():
    video_pos, audio_pos = rope.bridge_positions((3, 2, 2), 30, video_fps=24.0, audio_fps=50.0)
    assert video_pos.dtype == torch.float32 and video_pos.shape == (12,)
    step = 50.0 / (24.0 / 4)  # 8.333 audio frames per video latent frame
    torch.testing.assert_close(video_pos, torch.tensor([0.0] * 4 + [step] * 4 + [2 * step] * 4))
    torch.testing.assert_close(audio_pos, torch.arange(30, dtype=torch.float32))
    # a different fps moves the video positions (and only them)
    video_pos_12, audio_pos_12 = rope.bridge_positions((3, 2, 2), 30, video_fps=12.0, audio_fps=50.0)
    torch.testing.assert_close(video_pos_12[4], torch.tensor(50.0 / 3.0))
    torch.testing.assert_close(audio_pos_12, audio_pos)


def test_rotate_half_tables_are_float32_math_cast_to_the_model_dtype():
    pos = torch.tensor([0.0, 8.333333, 16.666666, 401.0])
    cos32, sin32 = rope.rotate_half_cos_sin(pos, 128, torch.float32)
    cos16, sin16 = rope.rotate_half_cos_sin(pos, 128, torch.bfloat16)
    assert cos16.dtype == torch.bfloat16 and cos32.shape == (4, 128)
    assert torch.equal(cos16, cos32.to(torch.bfloat16)) and torch.equal(sin16, sin32.to(torch.bfloat16))
    assert torch.equal(cos32[:, :64], cos32[:, 64:])  # emb = [freqs, freqs]
    inv_freq = 1.0 / 10000 ** (torch.arange(0, 128, 2, dtype=torch.float64) / 128)
    torch.testing.assert_close(cos32[:, :64].double(), torch.cos(pos.double()[:, None] * inv_freq), atol=2e-5, rtol=0)


def test_rotate_half_application_matches_the_formula_and_keeps_dtype():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 2 * 8, generator=gen)
    cos, sin = rope.rotate_half_cos_sin(torch.tensor([0.0, 1.5, 2.0, 7.25]), 8, torch.float32)
    out = rope.apply_rope_rotate_half(x, cos, sin, num_heads=2)
    xh = x.view(2, 4, 2, 8)
    rotated = torch.cat([-xh[..., 4:], xh[..., :4]], dim=-1)
    expected = (xh * cos[None, :, None] + rotated * sin[None, :, None]).view(2, 4, 16)
    torch.testing.assert_close(out, expected)
    out16 = rope.apply_rope_rotate_half(x.bfloat16(), cos.bfloat16(), sin.bfloat16(), num_heads=2)
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.float(), expected, atol=0.05, rtol=0.02)


def test_long_sequences_are_processed_in_token_slices_with_identical_values():
    from movakit.models.layers.dit_block import modulate
    from movakit.models.layers.pointwise import TOKEN_CHUNK, map_token_chunks

    n = TOKEN_CHUNK + 77  # two slices, the second one short
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, n, 24, generator=gen)
    freqs = rope.audio_rope_freqs(12, n)
    pairs = torch.view_as_complex(x.double().reshape(2, n, 2, 6, 2))
    one_shot = torch.view_as_real(pairs * freqs).flatten(2).float()
    assert torch.equal(rope.apply_rope_interleaved(x, freqs, num_heads=2), one_shot)

    cos, sin = rope.rotate_half_cos_sin(torch.arange(n, dtype=torch.float32) * 0.37, 12, torch.bfloat16)
    xb = x.bfloat16()
    xh = xb.float().view(2, n, 2, 12)
    rotated = torch.cat([-xh[..., 6:], xh[..., :6]], dim=-1)
    expected = (xh * cos.float()[None, :, None] + rotated * sin.float()[None, :, None]).view(2, n, 24).bfloat16()
    assert torch.equal(rope.apply_rope_rotate_half(xb, cos, sin, num_heads=2), expected)

    shift, scale = torch.randn(2, 1, 24, generator=gen).bfloat16(), torch.randn(2, 1, 24, generator=gen).bfloat16()
    expected = (xb.float() * (1 + scale.float()) + shift.float()).bfloat16()
    assert torch.equal(modulate(xb, shift, scale), expected)

    seen = []
    out = map_token_chunks(torch.zeros(1, 10, 1), lambda xs, s, e: seen.append((s, e)) or xs + s, chunk=4)
    assert seen == [(0, 4), (4, 8), (8, 10)]
    assert out[0, :, 0].tolist() == [0, 0, 0, 0, 4, 4, 4, 4, 8, 8]


def test_complex64_table_forms_the_rotation_in_float32_within_its_rounding_of_the_float64_product():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 300, 3 * 128, generator=gen)  # the release head_dim, 3 heads, positions up to 299
    freqs = rope.video_rope_freqs(128, (3, 10, 10))
    table = rope.interleaved_table(freqs, torch.float32)
    assert table.dtype == torch.complex64 and rope.interleaved_table(freqs, torch.float64).dtype == torch.complex128
    exact = rope.apply_rope_interleaved(x, freqs, num_heads=3)  # complex128: the official float64 product
    fast = rope.apply_rope_interleaved(x, table, num_heads=3)
    assert fast.dtype == torch.float32
    assert ((fast - exact).abs().max() / exact.abs().max()).item() < 1e-6


def test_rms_norm_matches_the_module_within_float32_rounding():
    from movakit.models.layers.attention import rms_norm

    gen = torch.Generator().manual_seed(6)
    norm = torch.nn.RMSNorm(256, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(256, generator=gen))
    x = 3 * torch.randn(2, 50, 256, generator=gen)
    expect = norm(x)
    assert ((rms_norm(norm, x) - expect).abs().max() / expect.abs().max()).item() < 1e-6
    assert torch.equal(rms_norm(norm, x.bfloat16()), norm(x.bfloat16()))  # bf16: the module itself
