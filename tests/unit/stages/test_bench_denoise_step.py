"""bench/bench_denoise_step.py: its analytic FLOP count agrees with torch's counter, and a 1-step smoke run works."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from movakit.models.audio_dit import AudioDiT, AudioDiTConfig
from movakit.models.bridge import BridgeConfig, DualTowerBridge
from movakit.models.dual_tower import dual_tower_forward
from movakit.models.video_dit import VideoDiT, VideoDiTConfig

_PATH = Path(__file__).resolve().parents[3] / "bench" / "bench_denoise_step.py"
_spec = importlib.util.spec_from_file_location("bench_denoise_step", _PATH)
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # dataclasses look their module up there
_spec.loader.exec_module(bench)


def _attention_flops(cfgs, t) -> float:
    """The score/softmax-weighted-sum FLOPs, which torch's counter skips for CPU SDPA."""
    v, a, b = cfgs
    own = sum(c["num_layers"] * (4 * n * n * c["dim"] + 4 * n * bench.TEXT_LEN * c["dim"]) for c, n in ((v, t.video), (a, t.audio)))
    layers = min(b["visual_layers"], b["audio_layers"])
    return own + layers * 4 * t.video * t.audio * (b["visual_hidden_dim"] + b["audio_hidden_dim"])


@torch.no_grad()
def test_matmul_flops_match_torch_flop_counter():
    cfgs = bench.CONFIGS["tiny"]
    v, a, b = cfgs
    torch.manual_seed(0)
    vd, ad = VideoDiT(VideoDiTConfig.from_dict(v)), AudioDiT(AudioDiTConfig.from_dict(a))
    br = DualTowerBridge(BridgeConfig.from_dict(b))
    t = bench.Tokens(video=2 * 4 * 6, audio=7)
    with FlopCounterMode(display=False) as counter:
        dual_tower_forward(
            vd, ad, br, video_x=torch.randn(1, v["in_dim"], 2, 8, 12), audio_x=torch.randn(1, a["in_dim"], 7),
            context=torch.randn(1, bench.TEXT_LEN, v["text_dim"]), t_video=torch.tensor([950.0]),
            t_audio=torch.tensor([950.0]), video_fps=24.0,
        )
    analytic = bench.step_flops(cfgs, t, forwards=1) - _attention_flops(cfgs, t)
    assert counter.get_total_flops() == analytic


def test_smoke_run_compares_with_the_exact_path(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench", "--tiny", "--steps", "2", "--repeats", "1", "--compare", "--height", "32",
                                      "--width", "48", "--num-frames", "5", "--peak-size", "256", "--pairs", "2"])
    assert bench.main() == 0
    out = capsys.readouterr().out
    assert "seconds per denoise step" in out and "fraction of matmul peak:" in out
    assert "ratio now / exact" in out and "max relative difference" in out
    assert "forward pairs: now / exact median" in out and "(2 pairs)" in out


@torch.no_grad()
def test_exact_path_is_the_official_formulation_within_float32_rounding_and_is_undone():
    torch.manual_seed(0)
    models = bench.build_models(bench.CONFIGS["tiny"], torch.float32)
    v, a, b = models.video_dit, models.audio_dit, models.bridge
    kwargs = dict(video_x=torch.randn(1, v.config.in_dim, 2, 8, 12), audio_x=torch.randn(1, a.config.in_dim, 7),
                  context=torch.randn(1, bench.TEXT_LEN, v.config.text_dim), t_video=torch.tensor([950.0]),
                  t_audio=torch.tensor([950.0]), video_fps=24.0)
    fast = dual_tower_forward(v, a, b, **kwargs)
    with bench.exact_path():
        assert v.rope_table((2, 4, 6)).dtype == torch.complex128  # the float64 product
        exact = dual_tower_forward(v, a, b, **kwargs)
    assert v.rope_table((2, 4, 6)).dtype == torch.complex64  # patches undone
    for got, want in zip(fast, exact):
        assert not torch.equal(got, want)  # the kernels differ ...
        assert ((got - want).abs().max() / want.abs().max()).item() < 5e-6  # ... by float32 rounding only
