"""dual_tower_forward: shapes and float32 outputs, batch independence (CFG as B=2), where the bridge sits in the
layer loop (before block i, both directions from pre-update states, extra video blocks without bridge), the
condition-scale switches, the fps dependence, and validation of inputs and module compatibility."""

from __future__ import annotations

import pytest
import torch
from tiny_model_configs import build, tiny_audio_dit, tiny_bridge, tiny_video_dit

from movakit.models.audio_dit import AudioDiT, AudioDiTConfig
from movakit.models.bridge import BridgeConfig, DualTowerBridge
from movakit.models.dual_tower import dual_tower_forward
from movakit.models.video_dit import VideoDiT, VideoDiTConfig


def _family(seed: int = 0):
    return (build(VideoDiT, VideoDiTConfig, tiny_video_dit(), seed),
            build(AudioDiT, AudioDiTConfig, tiny_audio_dit(), seed + 1),
            build(DualTowerBridge, BridgeConfig, tiny_bridge(), seed + 2))


def _inputs(b: int = 2, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return dict(video_x=torch.randn(b, 36, 3, 4, 6, generator=gen), audio_x=torch.randn(b, 8, 13, generator=gen),
                context=torch.randn(b, 9, 32, generator=gen), t_video=torch.tensor([1000.0, 105.03486][:b]),
                t_audio=torch.tensor([991.76, 300.0][:b]), video_fps=24.0)


def _run(models, **kw):
    with torch.no_grad():
        return dual_tower_forward(*models, **kw)


def test_shapes_float32_and_determinism():
    models = _family()
    v, a = _run(models, **_inputs())
    assert v.shape == (2, 16, 3, 4, 6) and a.shape == (2, 8, 13)
    assert v.dtype == a.dtype == torch.float32
    v2, a2 = _run(models, **_inputs())
    assert torch.equal(v, v2) and torch.equal(a, a2)


def test_batch_of_two_equals_two_single_calls():
    models = _family()
    inputs = _inputs()
    v, a = _run(models, **inputs)
    for i in range(2):
        single = {k: (val[i:i + 1] if torch.is_tensor(val) else val) for k, val in inputs.items()}
        vi, ai = _run(models, **single)
        torch.testing.assert_close(v[i:i + 1], vi, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a[i:i + 1], ai, rtol=1e-5, atol=1e-5)


def test_bf16_modules_still_return_float32():
    models = tuple(m.to(torch.bfloat16) for m in _family())
    v, a = _run(models, **_inputs())
    assert v.dtype == a.dtype == torch.float32 and torch.isfinite(v).all() and torch.isfinite(a).all()
    v32, a32 = _run(tuple(m.float() for m in models), **_inputs())
    assert (v - v32).abs().max() <= 0.05 * v32.abs().max()
    assert (a - a32).abs().max() <= 0.05 * a32.abs().max()


def _perturbed(models, which: str, index: int):
    video, audio, bridge = models
    target = {"video": video, "audio": audio}[which].blocks[index]
    with torch.no_grad():
        target.ffn[2].bias.add_(0.5)
    return models


def test_bridge_runs_before_each_shared_block_and_extra_video_blocks_run_without_it():
    """Tiny family: 3 video blocks, 2 audio blocks, bridge layers 0 and 1.

    Audio reads video only through bridge layers 0 (before any block) and 1 (after video block 0), so the audio
    velocity must depend on video block 0 and not on video blocks 1 or 2; the video velocity depends on every video
    block, and on audio block 0 (read by bridge layer 1) but not on audio block 1 (runs after the last bridge)."""
    inputs = _inputs()
    base_v, base_a = _run(_family(), **inputs)
    changed = {}
    for which, index in (("video", 0), ("video", 1), ("video", 2), ("audio", 0), ("audio", 1)):
        v, a = _run(_perturbed(_family(), which, index), **inputs)
        changed[(which, index)] = (not torch.equal(v, base_v), not torch.equal(a, base_a))
    assert changed[("video", 0)] == (True, True)
    assert changed[("video", 1)] == (True, False)
    assert changed[("video", 2)] == (True, False)
    assert changed[("audio", 0)] == (True, True)
    assert changed[("audio", 1)] == (False, True)


def test_condition_scales_switch_each_direction_off():
    models = _family()
    inputs = _inputs()
    other_audio = dict(inputs, audio_x=inputs["audio_x"] + 1.0)
    other_video = dict(inputs, video_x=inputs["video_x"] + 1.0)
    v, a = _run(models, **inputs)
    # with a2v off, the video prediction no longer sees the audio
    v_off, _ = _run(models, **inputs, a2v_condition_scale=0.0)
    v_off_other, _ = _run(models, **other_audio, a2v_condition_scale=0.0)
    assert torch.equal(v_off, v_off_other) and not torch.equal(v_off, v)
    assert not torch.equal(_run(models, **other_audio)[0], v)
    # with v2a off, the audio prediction no longer sees the video
    _, a_off = _run(models, **inputs, v2a_condition_scale=0.0)
    _, a_off_other = _run(models, **other_video, v2a_condition_scale=0.0)
    assert torch.equal(a_off, a_off_other) and not torch.equal(a_off, a)


def test_video_fps_changes_the_bridge_alignment():
    models = _family()
    v24, a24 = _run(models, **_inputs())
    v12, a12 = _run(models, **dict(_inputs(), video_fps=12.0))
    assert not torch.allclose(v24, v12) and not torch.allclose(a24, a12)


def test_rejects_bad_inputs():
    models = _family()
    with pytest.raises(ValueError, match="t_audio"):
        _run(models, **dict(_inputs(), t_audio=torch.tensor([5.0])))
    with pytest.raises(ValueError, match="audio_x"):
        _run(models, **dict(_inputs(), audio_x=torch.zeros(1, 8, 13)))
    with pytest.raises(ValueError, match="context"):
        _run(models, **dict(_inputs(), context=torch.zeros(2, 9, 31)))
    with pytest.raises(ValueError, match="video_x"):
        _run(models, **dict(_inputs(), video_x=torch.zeros(2, 20, 3, 4, 6)))


def test_rejects_modules_that_do_not_fit_together():
    video, audio, _ = _family()
    wrong = build(DualTowerBridge, BridgeConfig, tiny_bridge(visual_layers=4), 0)
    with pytest.raises(ValueError, match="visual_layers=4"):
        _run((video, audio, wrong), **_inputs())
    with pytest.raises(ValueError, match="one dtype"):
        _run((video, audio.to(torch.bfloat16), _family()[2]), **_inputs())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_tracks_cpu_float32():
    cpu = tuple(m.to(torch.bfloat16).float() for m in _family())  # bf16-rounded weights, float32 math
    gpu = tuple(m.to("cuda", torch.bfloat16) for m in _family())
    v32, a32 = _run(cpu, **_inputs())
    v16, a16 = _run(gpu, **_inputs())
    assert v16.device.type == "cuda" and v16.dtype == a16.dtype == torch.float32
    assert (v16.cpu() - v32).abs().max() <= 0.05 * v32.abs().max()
    assert (a16.cpu() - a32).abs().max() <= 0.05 * a32.abs().max()


def test_modules_built_on_meta_run_after_assign_loading():
    """Loaders build on the meta device and load with assign=True: no tensor (buffer, table) may stay on meta."""
    cpu = _family()
    with torch.device("meta"):
        meta = (VideoDiT(VideoDiTConfig.from_dict(tiny_video_dit())),
                AudioDiT(AudioDiTConfig.from_dict(tiny_audio_dit())),
                DualTowerBridge(BridgeConfig.from_dict(tiny_bridge())))
    for target, source in zip(meta, cpu):
        target.load_state_dict(source.state_dict(), strict=True, assign=True)
        assert not any(t.is_meta for t in list(target.parameters()) + list(target.buffers()))
    v, a = _run(meta, **_inputs())
    v_ref, a_ref = _run(cpu, **_inputs())
    assert torch.equal(v, v_ref) and torch.equal(a, a_ref)
