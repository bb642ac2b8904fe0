"""VideoDiT / VideoDiTConfig: config strictness, shapes, token order, time embedding precision, batch independence,
and the real-size model built on the meta device (key listing, parameter count)."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_model_configs import REAL_VIDEO_DIT, build, key_listing, read_key_listing, tiny_video_dit

from movakit.models.layers.timestep_embedding import sinusoidal_timestep_embedding
from movakit.models.video_dit import VideoDiT, VideoDiTConfig


def _model(seed: int = 0, **over) -> VideoDiT:
    return build(VideoDiT, VideoDiTConfig, tiny_video_dit(**over), seed)


def _inputs(b: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 36, 3, 4, 6, generator=gen)
    ctx = torch.randn(b, 7, 32, generator=gen)
    t = torch.tensor([1000.0, 105.03486, 500.0][:b])
    return x, t, ctx


# ---------------------------------------------------------------- config

def test_config_reads_the_release_keys_and_ignores_underscore_keys(tmp_path):
    cfg = VideoDiTConfig.from_dict(dict(REAL_VIDEO_DIT, _diffusers_version="0.35.1"))
    assert cfg.patch_size == (1, 2, 2) and cfg.head_dim == 128 and cfg.eps == 1e-6
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert VideoDiTConfig.from_json(path) == cfg


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        VideoDiTConfig.from_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        VideoDiTConfig.from_json(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        VideoDiTConfig.from_json(bad)


def test_config_accepts_sglang_spelling_of_the_timestep_flag():
    data = {k: v for k, v in REAL_VIDEO_DIT.items() if k != "seperated_timestep"}
    assert VideoDiTConfig.from_dict(dict(data, separated_timestep=False)).seperated_timestep is False
    with pytest.raises(ValueError, match="given twice"):
        VideoDiTConfig.from_dict(dict(REAL_VIDEO_DIT, separated_timestep=False))


def test_config_rejects_unknown_and_missing_keys():
    with pytest.raises(ValueError, match="unknown key 'dimm'"):
        VideoDiTConfig.from_dict(dict(REAL_VIDEO_DIT, dimm=3))
    data = {k: v for k, v in REAL_VIDEO_DIT.items() if k != "num_heads"}
    with pytest.raises(ValueError, match="missing key 'num_heads'"):
        VideoDiTConfig.from_dict(data)


@pytest.mark.parametrize("key, value", [("num_layers", True), ("dim", 5120.0), ("has_image_input", 0),
                                        ("patch_size", [1, 2]), ("eps", "1e-6")])
def test_config_type_checks_values(key, value):
    with pytest.raises(ValueError, match=key):
        VideoDiTConfig.from_dict(dict(REAL_VIDEO_DIT, **{key: value}))


@pytest.mark.parametrize("flag", ["has_image_input", "has_image_pos_emb", "has_ref_conv", "add_control_adapter",
                                  "seperated_timestep", "require_clip_embedding", "fuse_vae_embedding_in_latents"])
def test_config_refuses_flag_values_the_release_does_not_use(flag):
    with pytest.raises(NotImplementedError, match=flag):
        VideoDiTConfig.from_dict(dict(REAL_VIDEO_DIT, **{flag: True}))


def test_absent_flag_takes_the_official_default():
    # the official constructor defaults require_clip_embedding to true, which the release overrides with false
    data = {k: v for k, v in REAL_VIDEO_DIT.items() if k != "require_clip_embedding"}
    with pytest.raises(NotImplementedError, match="require_clip_embedding"):
        VideoDiTConfig.from_dict(data)
    data = {k: v for k, v in REAL_VIDEO_DIT.items() if k not in ("has_ref_conv", "in_dim_control_adapter")}
    assert VideoDiTConfig.from_dict(data).has_ref_conv is False


def test_config_rejects_heads_that_do_not_split_into_rope_parts():
    with pytest.raises(ValueError, match="head_dim 16"):
        VideoDiTConfig.from_dict(tiny_video_dit(dim=32, num_heads=2))
    with pytest.raises(ValueError, match="not divisible"):
        VideoDiTConfig.from_dict(tiny_video_dit(dim=50, num_heads=3))


# ---------------------------------------------------------------- forward

def test_forward_shape_dtype_and_determinism():
    model = _model()
    x, t, ctx = _inputs()
    with torch.no_grad():
        out = model(x, t, ctx)
        again = model(x, t, ctx)
    assert out.shape == (2, 16, 3, 4, 6) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert torch.equal(out, again)
    assert not torch.allclose(out[0], out[1])


def test_batch_of_two_equals_two_single_calls():
    """Per-sample timesteps and contexts; catches the (1,2,D) + (B,D) head broadcast of the official video head."""
    model = _model()
    x, t, ctx = _inputs()
    with torch.no_grad():
        both = model(x, t, ctx)
        singles = torch.cat([model(x[i:i + 1], t[i:i + 1], ctx[i:i + 1]) for i in range(2)])
    torch.testing.assert_close(both, singles, rtol=1e-5, atol=1e-5)


def test_patchify_orders_tokens_f_h_w_and_unpatchify_puts_channels_fastest():
    model = _model()
    x, _, _ = _inputs()
    with torch.no_grad():
        tokens, grid = model.patchify(x)
    assert grid == (3, 2, 3) and tokens.shape == (2, 18, 48)
    w, bias = model.patch_embedding.weight, model.patch_embedding.bias  # (D, 36, 1, 2, 2)
    f, h, ww = 2, 1, 2
    patch = x[:, :, f, 2 * h:2 * h + 2, 2 * ww:2 * ww + 2]  # (B, 36, 2, 2)
    expected = torch.einsum("bcyz,dcyz->bd", patch, w[:, :, 0]) + bias
    torch.testing.assert_close(tokens[:, (f * 2 + h) * 3 + ww], expected, rtol=1e-5, atol=1e-5)

    vec = torch.arange(2 * 18 * 64, dtype=torch.float32).view(2, 18, 64)  # 64 = (pt=1, ph=2, pw=2, c=16)
    out = model.unpatchify(vec, grid)
    assert out.shape == (2, 16, 3, 4, 6)
    for (fi, hi, wi, y, z, c) in [(0, 0, 0, 0, 0, 0), (2, 1, 2, 1, 0, 5), (1, 0, 1, 0, 1, 15)]:
        token = (fi * 2 + hi) * 3 + wi
        assert out[1, c, fi, 2 * hi + y, 2 * wi + z] == vec[1, token, (y * 2 + z) * 16 + c]


def test_rope_table_matches_the_token_grid():
    model = _model()
    freqs = model.rope_freqs((3, 2, 3))
    assert freqs.shape == (18, 1, 12) and freqs.dtype == torch.complex128


def test_patchify_rejects_wrong_inputs():
    model = _model()
    with pytest.raises(ValueError, match="video_x"):
        model.patchify(torch.zeros(1, 16, 3, 4, 6))
    with pytest.raises(ValueError, match="W=5"):
        model.patchify(torch.zeros(1, 36, 3, 4, 5))
    with pytest.raises(ValueError, match="timestep"):
        model(torch.zeros(2, 36, 1, 2, 2), torch.tensor([1.0]), torch.zeros(2, 3, 32))


# ---------------------------------------------------------------- timestep embedding precision

def test_sinusoid_layout_is_cos_then_sin_in_float64_rounded_to_float32():
    t = torch.tensor([0.0, 995.9470])
    emb = sinusoidal_timestep_embedding(t, 256)
    assert emb.dtype == torch.float32 and emb.shape == (2, 256)
    assert torch.equal(emb[0, :128], torch.ones(128)) and torch.equal(emb[0, 128:], torch.zeros(128))
    freqs = torch.pow(10000, -torch.arange(128, dtype=torch.float64) / 128)
    ang = t[1].double() * freqs
    assert torch.equal(emb[1], torch.cat([ang.cos(), ang.sin()]).float())
    # the timestep itself is rounded to float32 first, as the official sampler passes it
    t64 = torch.tensor([995.9470000001], dtype=torch.float64)
    assert torch.equal(sinusoidal_timestep_embedding(t64, 256), sinusoidal_timestep_embedding(t64.float(), 256))


def test_time_embedding_stays_float32_with_bf16_weights():
    model16 = _model().to(torch.bfloat16)
    model32 = _model().to(torch.bfloat16).to(torch.float32)  # same bf16-rounded weights, float32 storage
    t = torch.tensor([1000.0, 105.03486])
    with torch.no_grad():
        emb16, mod16 = model16.time_embedding_fp32(t)
        emb32, mod32 = model32.time_embedding_fp32(t)
    assert emb16.dtype == torch.float32 and mod16.dtype == torch.float32 and mod16.shape == (2, 6, 48)
    assert torch.equal(emb16, emb32) and torch.equal(mod16, mod32)
    assert not torch.equal(emb16, emb16.to(torch.bfloat16).float())  # genuinely float32 values


def test_bf16_forward_runs_and_tracks_float32():
    x, t, ctx = _inputs()
    model32 = _model().to(torch.bfloat16).to(torch.float32)
    model16 = _model().to(torch.bfloat16)
    with torch.no_grad():
        ref = model32(x, t, ctx)
        out = model16(x, t, ctx)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()


# ---------------------------------------------------------------- real size, on the meta device

def test_real_size_expert_keys_shapes_and_parameter_count():
    with torch.device("meta"):
        model = VideoDiT(VideoDiTConfig.from_dict(REAL_VIDEO_DIT))
    assert key_listing(model) == read_key_listing("video_dit")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["patch_embedding.weight"] == (5120, 36, 1, 2, 2)  # docs/checkpoint.md#key-names
    assert shapes["head.head.weight"] == (64, 5120)
    assert shapes["blocks.39.modulation"] == (1, 6, 5120) and shapes["head.modulation"] == (1, 2, 5120)
    assert not any("freq" in k or "rotary" in k for k in shapes)  # RoPE tables are not weights
    n = sum(p.numel() for p in model.parameters())
    assert f"{n / 1e9:.3f}" == "14.289"  # docs/model.md#components
    assert n == 14_288_901_184
