"""`mova generate --context-parallel 2` under torchrun on the CPU (gloo): the same latents as one process, within
float32 noise, and one set of files written by rank 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from movakit.runtime.localstack import free_port

pytestmark = pytest.mark.slow
ARGS = ["generate", "--prompt", "A bell rings twice.", "--height", "32", "--width", "48", "--num-frames", "5",
        "--steps", "2", "--seed", "5"]


def _mova(*args: str, torchrun: int = 0) -> subprocess.CompletedProcess:
    script = str(Path(sys.executable).parent / "mova")
    launcher = ([sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={torchrun}",
                 f"--master-port={free_port()}", script] if torchrun else [sys.executable, script])
    return subprocess.run([*launcher, *args], capture_output=True, text=True, timeout=600)


def test_two_processes_give_the_single_process_latents(tmp_path):
    one = _mova(*ARGS, "--output", str(tmp_path / "one.mp4"), "--save-latents", str(tmp_path / "one.safetensors"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = _mova(*ARGS, "--context-parallel", "2", "--output", str(tmp_path / "two.mp4"),
                "--save-latents", str(tmp_path / "two.safetensors"), torchrun=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("video: ") == 1  # only rank 0 reports and writes
    a, b = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    for key in ("video", "audio"):
        assert (a[key] - b[key]).abs().max() < 1e-5, key
    assert (tmp_path / "two.mp4").stat().st_size > 0 and (tmp_path / "two.wav").is_file()


def test_context_parallel_needs_as_many_processes():
    out = _mova(*ARGS, "--context-parallel", "2")
    assert out.returncode == 2 and "--context-parallel: 2 processes are needed, this is 1" in out.stderr
