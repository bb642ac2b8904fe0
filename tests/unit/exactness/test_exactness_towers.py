"""H1's VideoDiT / AudioDiT against the independent reference, piece by piece and whole, on the same
official-key state dicts. Configs: head_dim 24 (RoPE 8/8/8), 12 (4/4/4) and 20 (8/6/6: an uneven split,
so a t/h/w order or size slip shows). float32 within 1e-5 relative; float64 where the module keeps it.
"""

from __future__ import annotations

import exactness_setup as es
import mova_reference as ref
import pytest
import tiny_weights as tw
import torch

from movakit.models.audio_dit import AudioDiT, AudioDiTConfig
from movakit.models.video_dit import VideoDiT, VideoDiTConfig

F32_REL = 1e-5
# H1 forms `modulate`, the time MLPs and the sinusoid in float32 on purpose (official kernels); in a float64
# model that caps agreement with the float64 reference at float32 rounding.
F64_REL = 1e-6

VIDEO_HEAD_DIMS = [24, 12, 20]
AUDIO_HEAD_DIMS = [24, 12]
TIMESTEPS = torch.tensor([1000.0, 105.03486])  # a B=2 batch with different timesteps per sample


def _video(head_dim: int, dtype: torch.dtype, seed: int = 0):
    cfg = tw.video_dit_config(head_dim=head_dim, num_heads=2, num_layers=2)
    sd = tw.video_dit_state_dict(cfg, seed)
    model = VideoDiT(VideoDiTConfig.from_dict(cfg)).to(dtype)  # dtype first: loading copies into the params
    model.load_state_dict(tw.cast(sd, dtype), strict=True)
    return cfg, sd, model.eval()


def _audio(head_dim: int, dtype: torch.dtype, seed: int = 0):
    cfg = tw.audio_dit_config(head_dim=head_dim, num_heads=3, num_layers=2)
    sd = tw.audio_dit_state_dict(cfg, seed)
    model = AudioDiT(AudioDiTConfig.from_dict(cfg)).to(dtype)
    model.load_state_dict(tw.cast(sd, dtype), strict=True)
    return cfg, sd, model.eval()


def test_state_dict_keys_and_shapes_are_the_official_ones():
    for cfg, sd, model in (_video(24, torch.float32), _audio(24, torch.float32)):
        got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert got == {k: tuple(v.shape) for k, v in sd.items()}


@pytest.mark.parametrize("build", [_video, _audio], ids=["video", "audio"])
def test_time_embedding(build):
    cfg, sd, model = build(24, torch.float32)
    dims = ref.TowerDims.from_config(cfg)
    with torch.no_grad():
        t_emb, t_mod = model.time_embedding_fp32(TIMESTEPS)
    r_emb, r_mod = ref.time_embeddings(sd, dims, TIMESTEPS)
    assert t_emb.dtype == torch.float32 and t_mod.shape == (2, 6, dims.dim)
    es.assert_rel_close(t_emb, r_emb, F32_REL, "t_emb")
    es.assert_rel_close(t_mod, r_mod, F32_REL, "t_mod")


@pytest.mark.parametrize("build", [_video, _audio], ids=["video", "audio"])
def test_text_embedding(build):
    cfg, sd, model = build(24, torch.float32)
    ctx = es.randn(2, 7, cfg["text_dim"], seed=1)
    with torch.no_grad():
        got = model.embed_text(ctx.float())
    es.assert_rel_close(got, ref.text_embedding(sd, ctx.float()), F32_REL, "text embedding")


@pytest.mark.parametrize("head_dim", VIDEO_HEAD_DIMS)
def test_video_patchify_rope_unpatchify(head_dim):
    cfg, sd, model = _video(head_dim, torch.float64)
    dims = ref.TowerDims.from_config(cfg)
    x = es.randn(2, 36, 3, 4, 6, seed=2)
    with torch.no_grad():
        tokens, grid = model.patchify(x)
    r_tokens, r_grid = ref.patchify_video(sd, dims, x)
    assert tuple(grid) == r_grid == (3, 2, 3)
    es.assert_rel_close(tokens, r_tokens, 1e-12, "video patch tokens")
    freqs = model.rope_freqs(grid)
    angles = ref.video_rope_angles(dims.head_dim, r_grid)
    expect = torch.polar(torch.ones_like(angles), angles)
    assert freqs.reshape(angles.shape).dtype == torch.complex128
    assert torch.allclose(freqs.reshape(angles.shape), expect, rtol=0, atol=1e-12), "video RoPE table"
    toks = es.randn(2, 18, 16 * 4, seed=3)
    assert torch.equal(model.unpatchify(toks, grid), ref.unpatchify_video(dims, toks, r_grid))


@pytest.mark.parametrize("head_dim", AUDIO_HEAD_DIMS)
def test_audio_patchify_rope_unpatchify(head_dim):
    cfg, sd, model = _audio(head_dim, torch.float64)
    dims = ref.TowerDims.from_config(cfg)
    x = es.randn(2, 128, 11, seed=4)
    with torch.no_grad():
        tokens, grid = model.patchify(x)
    r_tokens, n = ref.patchify_audio(sd, dims, x)
    assert tuple(grid) == (n,) == (11,)
    es.assert_rel_close(tokens, r_tokens, 1e-12, "audio patch tokens")
    angles = ref.audio_rope_angles(dims.head_dim, n)
    freqs = model.rope_freqs(grid).reshape(angles.shape)
    assert torch.allclose(freqs, torch.polar(torch.ones_like(angles), angles), rtol=0, atol=1e-12), "audio RoPE"
    toks = es.randn(2, 11, 128, seed=5)
    assert torch.equal(model.unpatchify(toks, grid), ref.unpatchify_audio(dims, toks, n))


def _block_case(build, head_dim, dtype, grid_or_len):
    cfg, sd, model = build(head_dim, dtype)
    dims = ref.TowerDims.from_config(cfg)
    if isinstance(grid_or_len, tuple):
        length = grid_or_len[0] * grid_or_len[1] * grid_or_len[2]
        angles = ref.video_rope_angles(dims.head_dim, grid_or_len)
    else:
        length = grid_or_len
        angles = ref.audio_rope_angles(dims.head_dim, length)
    x = es.randn(2, length, dims.dim, seed=6)
    ctx = es.randn(2, 7, dims.dim, seed=7)
    t_mod = 0.5 * es.randn(2, 6, dims.dim, seed=8)  # differs per sample
    with torch.no_grad():
        block = model.blocks[1]
        got = block(x.to(dtype), block.cross_attn.context_kv(ctx.to(dtype)), t_mod.to(dtype), model.rope_freqs(
            grid_or_len if isinstance(grid_or_len, tuple) else (length,)))
    expect = ref.dit_block(sd, "blocks.1", dims, x, ctx, t_mod, angles)
    return got, expect


@pytest.mark.parametrize("dtype,rel", [(torch.float32, F32_REL), (torch.float64, F64_REL)], ids=["f32", "f64"])
@pytest.mark.parametrize("head_dim", VIDEO_HEAD_DIMS)
def test_video_block(head_dim, dtype, rel):
    got, expect = _block_case(_video, head_dim, dtype, (3, 2, 3))
    es.assert_rel_close(got, expect, rel, f"video block (head_dim {head_dim}, {dtype})")


@pytest.mark.parametrize("dtype,rel", [(torch.float32, F32_REL), (torch.float64, F64_REL)], ids=["f32", "f64"])
@pytest.mark.parametrize("head_dim", AUDIO_HEAD_DIMS)
def test_audio_block(head_dim, dtype, rel):
    got, expect = _block_case(_audio, head_dim, dtype, 13)
    es.assert_rel_close(got, expect, rel, f"audio block (head_dim {head_dim}, {dtype})")


@pytest.mark.parametrize("build", [_video, _audio], ids=["video", "audio"])
def test_head_is_per_sample_for_batch_two(build):
    cfg, sd, model = build(24, torch.float64)
    dims = ref.TowerDims.from_config(cfg)
    x = es.randn(2, 5, dims.dim, seed=9)
    t_emb = es.randn(2, dims.dim, seed=10)
    with torch.no_grad():
        got = model.head(x, t_emb)
    es.assert_rel_close(got, ref.head(sd, dims, x, t_emb), 1e-6, "head, B=2")
    # and sample 1 alone gives the same as sample 1 of the batch
    with torch.no_grad():
        alone = model.head(x[1:], t_emb[1:])
    es.assert_rel_close(alone, got[1:], 1e-12, "head, sample 1 alone vs in batch")


@pytest.mark.parametrize("dtype,rel", [(torch.float32, F32_REL), (torch.float64, F64_REL)], ids=["f32", "f64"])
@pytest.mark.parametrize("head_dim", VIDEO_HEAD_DIMS)
def test_video_tower_forward(head_dim, dtype, rel):
    cfg, sd, model = _video(head_dim, dtype)
    x = es.randn(2, 36, 3, 4, 6, seed=11)
    ctx = es.randn(2, 7, cfg["text_dim"], seed=12)
    with torch.no_grad():
        got = model(x.to(dtype), TIMESTEPS, ctx.to(dtype))
    expect = ref.video_tower_forward(sd, cfg, x, TIMESTEPS, ctx)
    assert got.dtype == torch.float32
    es.assert_rel_close(got, expect, rel, f"video tower (head_dim {head_dim}, {dtype})")


@pytest.mark.parametrize("dtype,rel", [(torch.float32, F32_REL), (torch.float64, F64_REL)], ids=["f32", "f64"])
@pytest.mark.parametrize("head_dim", AUDIO_HEAD_DIMS)
def test_audio_tower_forward(head_dim, dtype, rel):
    cfg, sd, model = _audio(head_dim, dtype)
    x = es.randn(2, 128, 13, seed=13)
    ctx = es.randn(2, 7, cfg["text_dim"], seed=14)
    with torch.no_grad():
        got = model(x.to(dtype), TIMESTEPS, ctx.to(dtype))
    expect = ref.audio_tower_forward(sd, cfg, x, TIMESTEPS, ctx)
    es.assert_rel_close(got, expect, rel, f"audio tower (head_dim {head_dim}, {dtype})")
