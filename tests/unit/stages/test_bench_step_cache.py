"""bench/bench_step_cache.py: a smoke run prints the speed-up, the skipped forwards and the drift per threshold."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parents[3] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, _BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there; bench_step_cache imports bench_denoise_step
    spec.loader.exec_module(module)
    return module


def test_smoke_run_reports_speed_up_skips_and_drift(monkeypatch, capsys):
    if "bench_denoise_step" not in sys.modules:
        _load("bench_denoise_step")
    bench = _load("bench_step_cache")
    monkeypatch.setattr(sys, "argv", ["bench", "--tiny", "--steps", "4", "--repeats", "1", "--thresholds", "1.0"])
    assert bench.main() == 0
    out = capsys.readouterr().out
    line = re.search(r"threshold 1: .* speed-up .*x, blocks skipped in (\d+) of 8 forwards; drift \(relative L2\) "
                     r"video (\S+), audio (\S+)", out)
    assert line is not None, out
    assert int(line.group(1)) > 0 and float(line.group(2)) > 0  # threshold 1.0 skips, and skipping moves the latents
