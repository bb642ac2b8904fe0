"""The installed product: a wheel built from this checkout, installed into a fresh venv, runs the stack from a
folder outside the checkout (`mova stack up`, `mova submit --wait`, `mova stack down`).

To stay offline and quick, the fresh venv reuses the dependencies the running interpreter already has: a .pth file
appends that environment's site-packages to sys.path. The .pth files inside it (among them an editable movakit)
are not processed that way, and PYTHONPATH is removed, so movakit itself comes from the wheel only; the test
checks where the venv and the spawned services import it from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from movakit.runtime.localstack import free_port, port_open

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _run(argv: list[str], *, env: dict[str, str], cwd: Path, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv folder, environment without PYTHONPATH, a working folder outside the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # the files the build reads, so the build leaves nothing in the checkout
    shutil.copytree(REPO / "movakit", source / "movakit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    work = root / "work"
    work.mkdir()
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                  str(root / "dist"), str(source)], env=env, cwd=work)
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("movakit-*.whl")

    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], env=env, cwd=work)
    assert made.returncode == 0, made.stderr
    python = str(venv / "bin" / "python")
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=env, cwd=work)
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib.stdout.strip(), "reused-dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    installed = _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], env=env, cwd=work)
    assert installed.returncode == 0, installed.stderr
    return venv, env, work


def test_wheel_holds_the_services_and_runs_the_stack(installed):
    venv, env, work = installed
    python, mova = str(venv / "bin" / "python"), str(venv / "bin" / "mova")
    where = _run([python, "-c", "import movakit, movakit.services.denoiser.main, movakit.api.v1.gateway_pb2 as g;"
                  "print(movakit.__file__)"], env=env, cwd=work)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # not the checkout, not an editable install

    ports = [free_port() for _ in range(10)]
    while len(set(ports)) < 10:
        ports = [free_port() for _ in range(10)]
    state = work / "state"
    up = _run([mova, "stack", "up", "--state-dir", str(state), "--kafka-port", str(ports[0]), "--s3-port",
               str(ports[1]), "--gateway-port", str(ports[2]), "--stage-ports", ",".join(map(str, ports[3:7])),
               "--http-port", str(ports[7]), "--redis-port", str(ports[8]), "--trainer-port", str(ports[9])],
              env=env, cwd=work)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        recorded = json.loads((state / "stack.json").read_text())["processes"]
        assert {p["argv"][0] for p in recorded if p["kind"] == "service"} == {python}  # services run the venv's
        submitted = _run([mova, "submit", "--prompt", "A bell rings twice.", "--gateway", f"127.0.0.1:{ports[2]}",
                          "--state-dir", str(state), "--height", "32", "--width", "32", "--num-frames", "5",
                          "--steps", "2", "--seed", "7", "--wait"], env=env, cwd=work)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert "video.mp4" in submitted.stdout
    finally:
        down = _run([mova, "stack", "down", "--state-dir", str(state)], env=env, cwd=work)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(port_open(p) for p in ports)
    assert not (work / ".mova").exists() and (state / "logs" / "gateway.log").is_file()
