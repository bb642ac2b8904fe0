"""DualTowerBridge / BridgeConfig: config strictness, keys, pre-update (parallel) semantics, condition scales,
the conditioner's math, aligned RoPE tables, real-size keys and parameter count."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_model_configs import REAL_BRIDGE, build, key_listing, read_key_listing, tiny_bridge

from movakit.models.bridge import BridgeConfig, DualTowerBridge


def _bridge(seed: int = 0, **over) -> DualTowerBridge:
    return build(DualTowerBridge, BridgeConfig, tiny_bridge(**over), seed)


def _states(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    grid, audio_len = (2, 2, 3), 9
    return grid, torch.randn(2, 12, 48, generator=gen), torch.randn(2, audio_len, 36, generator=gen)


def _rope(bridge: DualTowerBridge, grid, audio_len: int, fps: float = 24.0):
    return bridge.build_aligned_rope(grid, audio_len, video_fps=fps, device="cpu", dtype=torch.float32)


def test_config_requires_every_key_and_refuses_legacy_values():
    assert BridgeConfig.from_dict(REAL_BRIDGE).num_interaction_layers == 30
    for key in ("audio_fps", "interaction_strategy"):
        with pytest.raises(ValueError, match=f"missing key '{key}'"):
            BridgeConfig.from_dict({k: v for k, v in REAL_BRIDGE.items() if k != key})
    for key, value in (("interaction_strategy", "shallow_focus"), ("apply_cross_rope", False),
                       ("apply_first_frame_bias_in_rope", True), ("trainable_condition_scale", True),
                       ("pooled_adaln", True)):
        with pytest.raises(NotImplementedError, match=key):
            BridgeConfig.from_dict(dict(REAL_BRIDGE, **{key: value}))
    with pytest.raises(ValueError, match="'audio_hidden_dim' 1500 is not divisible"):
        BridgeConfig.from_dict(dict(REAL_BRIDGE, audio_hidden_dim=1500))


def test_one_conditioner_pair_per_shared_layer():
    bridge = _bridge()
    keys = set(bridge.state_dict())
    assert "audio_to_video_conditioners.1.inner.norm_k.weight" in keys
    assert "video_to_audio_conditioners.1.y_norm.bias" in keys
    assert not any(k.split(".")[1] == "2" for k in keys)  # min(3 video, 2 audio) layers
    with pytest.raises(IndexError, match="bridge layer 2"):
        grid, v, a = _states()
        bridge(2, v, a, video_rope=_rope(bridge, grid, 9)[0], audio_rope=_rope(bridge, grid, 9)[1])


def _conditioner_by_hand(block, x, y, x_cs, y_cs, heads: int):
    """The spec's formula, written out: LN(y) with affine; q from the raw x; RMSNorm over the width; rotate-half."""
    inner = block.inner
    y_n = F.layer_norm(y, (y.shape[-1],), block.y_norm.weight, block.y_norm.bias, 1e-6)
    q = F.rms_norm(F.linear(x, inner.q.weight, inner.q.bias), (x.shape[-1],), inner.norm_q.weight, 1e-6)
    k = F.rms_norm(F.linear(y_n, inner.k.weight, inner.k.bias), (x.shape[-1],), inner.norm_k.weight, 1e-6)
    v = F.linear(y_n, inner.v.weight, inner.v.bias)

    def rot(t, cs):
        b, n, d = t.shape
        th = t.view(b, n, heads, d // heads)
        half = th.shape[-1] // 2
        rotated = torch.cat([-th[..., half:], th[..., :half]], dim=-1)
        return (th * cs[0][None, :, None] + rotated * cs[1][None, :, None]).transpose(1, 2)  # (B, heads, n, hd)

    qh, kh = rot(q, x_cs), rot(k, y_cs)
    vh = v.view(v.shape[0], v.shape[1], heads, -1).transpose(1, 2)
    att = torch.softmax(qh @ kh.transpose(-1, -2) / qh.shape[-1] ** 0.5, dim=-1) @ vh
    return F.linear(att.transpose(1, 2).reshape(x.shape), inner.o.weight, inner.o.bias)


def test_conditioner_math_matches_the_spec_formula():
    bridge = _bridge()
    grid, v, a = _states()
    v_cs, a_cs = _rope(bridge, grid, 9)
    with torch.no_grad():
        got_a2v = bridge.audio_to_video_conditioners["0"](v, a, v_cs, a_cs)
        got_v2a = bridge.video_to_audio_conditioners["1"](a, v, a_cs, v_cs)
        exp_a2v = _conditioner_by_hand(bridge.audio_to_video_conditioners["0"], v, a, v_cs, a_cs, heads=4)
        exp_v2a = _conditioner_by_hand(bridge.video_to_audio_conditioners["1"], a, v, a_cs, v_cs, heads=3)
    torch.testing.assert_close(got_a2v, exp_a2v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_v2a, exp_v2a, rtol=1e-5, atol=1e-5)


def test_both_directions_read_the_pre_update_states():
    bridge = _bridge()
    grid, v, a = _states()
    v_cs, a_cs = _rope(bridge, grid, 9)
    with torch.no_grad():
        new_v, new_a = bridge(1, v, a, video_rope=v_cs, audio_rope=a_cs)
        a2v, v2a = bridge.audio_to_video_conditioners["1"], bridge.video_to_audio_conditioners["1"]
        parallel_v = v + a2v(v, a, v_cs, a_cs)
        parallel_a = a + v2a(a, v, a_cs, v_cs)
        sequential_a = a + v2a(a, parallel_v, a_cs, v_cs)  # audio reading the already-updated video: wrong
    assert torch.equal(new_v, parallel_v) and torch.equal(new_a, parallel_a)
    assert not torch.allclose(new_a, sequential_a, atol=1e-4)


def test_condition_scales_multiply_each_residual():
    bridge = _bridge()
    grid, v, a = _states()
    v_cs, a_cs = _rope(bridge, grid, 9)
    with torch.no_grad():
        base_v, base_a = bridge(0, v, a, video_rope=v_cs, audio_rope=a_cs)
        off_v, doubled_a = bridge(0, v, a, video_rope=v_cs, audio_rope=a_cs, a2v_condition_scale=0.0,
                                  v2a_condition_scale=2.0)
    assert torch.equal(off_v, v)
    torch.testing.assert_close(doubled_a - a, 2 * (base_a - a))
    assert not torch.equal(base_v, v)


def test_aligned_rope_tables_use_the_video_fps_and_the_model_dtype():
    bridge = _bridge()
    (cos_v, sin_v), (cos_a, sin_a) = bridge.build_aligned_rope((3, 1, 2), 20, video_fps=24.0, device="cpu",
                                                               dtype=torch.bfloat16)
    assert cos_v.shape == (6, 12) and cos_a.shape == (20, 12) and cos_v.dtype == torch.bfloat16
    # video frame 2 sits at 2 * 50 / (24 / 4) = 16.67 audio frames: between audio tokens 16 and 17
    (cos_v32, _), (cos_a32, _) = bridge.build_aligned_rope((3, 1, 2), 20, video_fps=24.0, device="cpu",
                                                           dtype=torch.float32)
    torch.testing.assert_close(cos_v32[4, 0], torch.cos(torch.tensor(2 * 50 / 6.0)))
    assert torch.equal(cos_v32[4], cos_v32[5])  # same frame, same position
    assert torch.equal(cos_v, cos_v32.to(torch.bfloat16))
    (cos_v12, _), _ = bridge.build_aligned_rope((3, 1, 2), 20, video_fps=12.0, device="cpu", dtype=torch.float32)
    assert not torch.allclose(cos_v12[2:], cos_v32[2:])
    with pytest.raises(ValueError, match="video_fps"):
        bridge.build_aligned_rope((3, 1, 2), 20, video_fps=0.0, device="cpu", dtype=torch.float32)


def test_real_size_bridge_keys_shapes_and_parameter_count():
    with torch.device("meta"):
        bridge = DualTowerBridge(BridgeConfig.from_dict(REAL_BRIDGE))
    assert key_listing(bridge) == read_key_listing("dual_tower_bridge")
    shapes = {k: tuple(v.shape) for k, v in bridge.state_dict().items()}
    assert shapes["audio_to_video_conditioners.29.inner.k.weight"] == (5120, 1536)
    assert shapes["video_to_audio_conditioners.0.inner.v.weight"] == (1536, 5120)
    assert shapes["video_to_audio_conditioners.0.y_norm.weight"] == (5120,)
    assert "audio_to_video_conditioners.30.y_norm.weight" not in shapes
    per_a2v = sum(p.numel() for p in bridge.audio_to_video_conditioners["0"].parameters())
    per_v2a = sum(p.numel() for p in bridge.video_to_audio_conditioners["0"].parameters())
    assert (round(per_a2v / 1e6, 1), round(per_v2a / 1e6, 1)) == (68.2, 20.5)  # docs/model.md#components
    n = sum(p.numel() for p in bridge.parameters())
    assert f"{n / 1e9:.3f}" == "2.660"
