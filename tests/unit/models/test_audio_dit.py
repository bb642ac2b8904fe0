"""AudioDiT / AudioDiTConfig: config strictness (vae_type), 1-D patching and RoPE, batch independence, real size."""

from __future__ import annotations

import pytest
import torch
from tiny_model_configs import REAL_AUDIO_DIT, build, key_listing, read_key_listing, tiny_audio_dit

from movakit.models.audio_dit import AudioDiT, AudioDiTConfig
from movakit.models.layers.rope import apply_rope_interleaved


def _model(seed: int = 0, **over) -> AudioDiT:
    return build(AudioDiT, AudioDiTConfig, tiny_audio_dit(**over), seed)


def _inputs(b: int = 2, length: int = 11, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 8, length, generator=gen), torch.tensor([1000.0, 105.03486, 7.0][:b]),
            torch.randn(b, 7, 32, generator=gen))


def test_config_requires_the_dac_variant():
    cfg = AudioDiTConfig.from_dict(dict(REAL_AUDIO_DIT, _class_name="WanAudioModel"))
    assert cfg.patch_size == (1,) and cfg.head_dim == 128 and cfg.vae_type == "dac"
    with pytest.raises(NotImplementedError, match="vae_type"):
        AudioDiTConfig.from_dict(dict(REAL_AUDIO_DIT, vae_type="oobleck"))
    without = {k: v for k, v in REAL_AUDIO_DIT.items() if k != "vae_type"}  # official default is "oobleck"
    with pytest.raises(NotImplementedError, match="vae_type"):
        AudioDiTConfig.from_dict(without)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown key 'fps'"):
        AudioDiTConfig.from_dict(dict(REAL_AUDIO_DIT, fps=50))
    with pytest.raises(ValueError, match="patch_size"):
        AudioDiTConfig.from_dict(dict(REAL_AUDIO_DIT, patch_size=[1, 2, 2]))
    with pytest.raises(NotImplementedError, match="has_image_input"):
        AudioDiTConfig.from_dict(dict(REAL_AUDIO_DIT, has_image_input=True))
    with pytest.raises(ValueError, match="must be even"):
        AudioDiTConfig.from_dict(tiny_audio_dit(dim=27, num_heads=3))


def test_forward_shape_dtype_determinism_and_batch_independence():
    model = _model()
    x, t, ctx = _inputs()
    with torch.no_grad():
        out = model(x, t, ctx)
        again = model(x, t, ctx)
        singles = torch.cat([model(x[i:i + 1], t[i:i + 1], ctx[i:i + 1]) for i in range(2)])
    assert out.shape == (2, 8, 11) and out.dtype == torch.float32
    assert torch.equal(out, again)
    torch.testing.assert_close(out, singles, rtol=1e-5, atol=1e-5)


def test_patchify_is_a_per_frame_linear_and_unpatchify_its_inverse_layout():
    model = _model()
    x, _, _ = _inputs()
    with torch.no_grad():
        tokens, grid = model.patchify(x)
    assert grid == (11,) and tokens.shape == (2, 11, 36)
    w, bias = model.patch_embedding.weight[:, :, 0], model.patch_embedding.bias
    torch.testing.assert_close(tokens[:, 4], x[:, :, 4] @ w.T + bias, rtol=1e-5, atol=1e-5)
    vec = torch.arange(2 * 11 * 8, dtype=torch.float32).view(2, 11, 8)
    out = model.unpatchify(vec, grid)
    assert out.shape == (2, 8, 11) and torch.equal(out, vec.transpose(1, 2))


def test_self_attention_uses_1d_rope_over_the_whole_head():
    """Swapping tokens changes the output only through RoPE: with positions ignored attention would be equivariant."""
    model = _model()
    attn = model.blocks[0].self_attn
    gen = torch.Generator().manual_seed(3)
    h = torch.randn(1, 6, 36, generator=gen)
    perm = torch.tensor([1, 0, 2, 3, 4, 5])
    freqs = model.rope_freqs((6,))
    assert freqs.shape == (6, 1, 6)
    identity = torch.ones_like(freqs)
    with torch.no_grad():
        no_rope = attn(h, identity)
        no_rope_perm = attn(h[:, perm], identity)
        with_rope = attn(h, freqs)
        with_rope_perm = attn(h[:, perm], freqs)
        # the RoPE applied to q is exactly the interleaved one of the layers module
        q = attn.norm_q(attn.q(h))
        torch.testing.assert_close(apply_rope_interleaved(q, freqs, 3)[:, 0], q[:, 0])
    torch.testing.assert_close(no_rope_perm, no_rope[:, perm])
    assert not torch.allclose(with_rope_perm, with_rope[:, perm], atol=1e-4)


def test_real_size_audio_dit_keys_shapes_and_parameter_count():
    with torch.device("meta"):
        model = AudioDiT(AudioDiTConfig.from_dict(REAL_AUDIO_DIT))
    assert key_listing(model) == read_key_listing("audio_dit")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["patch_embedding.weight"] == (1536, 128, 1)  # docs/checkpoint.md#key-names
    assert shapes["head.head.weight"] == (128, 1536)
    assert "blocks.29.ffn.0.weight" in shapes and "blocks.30.ffn.0.weight" not in shapes
    n = sum(p.numel() for p in model.parameters())
    assert f"{n / 1e9:.3f}" == "1.419"  # docs/model.md#components
