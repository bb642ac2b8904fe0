"""tritonserver on 127.0.0.1 for `mova stack up --triton` and the tests, serving infra/triton/models.

The server binary, its libraries and the python backend come from PyPI nvidia-pytriton 0.7.0 (Triton 2.51),
installed without its dependencies by scripts/install.sh (its numpy<2 pin would downgrade the project's numpy).
What running it outside pytriton needs (measured; docs/stack.md "Triton"):
  - the python backend folder, copied into the work folder with the stub built for this Python version beside
    libtriton_python.so (where the backend looks for `triton_python_backend_stub`);
  - LD_LIBRARY_PATH: this interpreter's lib folder first (the stub links libpython3.x, and a system libpython of
    another patch release breaks the standard library) and the wheel's bundled libraries;
  - PATH starting with this interpreter's bin folder (the stub finds its Python, hence the venv, there) and
    PYTHONPATH naming the folder that holds movakit (model.py applies it itself: the stub ignores the variable).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path

from movakit.runtime.localstack import LocalStackError, ManagedProcess, _wait, log_tail, port_open, spawn

TEXT_ENCODER_MODEL = "umt5_encoder"  # infra/triton/models/umt5_encoder


def default_model_repository() -> Path:
    """infra/triton/models of the source tree this movakit was imported from."""
    path = Path(__file__).resolve().parents[2] / "infra" / "triton" / "models"
    if not path.is_dir():
        raise LocalStackError(f"Triton model repository {path} not found (it ships with the source tree, not the wheel)")
    return path


def pytriton_dist() -> tuple[Path, Path]:
    """(the wheel's tritonserver folder, its bundled libraries folder) of PyPI nvidia-pytriton."""
    for base in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        dist = Path(base) / "pytriton" / "tritonserver"
        if (dist / "bin" / "tritonserver").exists():
            return dist, Path(base) / "nvidia_pytriton.libs"
    raise LocalStackError("tritonserver: not found; run scripts/install.sh "
                          "(pip install --no-deps nvidia-pytriton==0.7.0)")


def _backends(dist: Path, work_dir: Path) -> Path:
    """A backends folder in work_dir: the wheel's python backend plus the stub for this interpreter's version."""
    backends = work_dir / "backends"
    if not (backends / "python" / "triton_python_backend_stub").exists():
        shutil.copytree(dist / "backends", backends, dirs_exist_ok=True)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.exists():
            raise LocalStackError(f"nvidia-pytriton has no python backend stub for Python {version}")
        shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
    return backends


def _model_ready(http_port: int, model: str) -> bool:
    if not port_open(http_port):
        return False
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/{model}/ready", timeout=1.0):  # noqa: S310
            return True
    except (urllib.error.URLError, OSError):
        return False


def start_tritonserver(
    grpc_port: int, http_port: int, metrics_port: int, work_dir: Path | str, *,
    model_repository: Path | None = None, env: dict[str, str] | None = None, timeout_s: float = 180.0,
) -> ManagedProcess:
    """Starts tritonserver with every listener on 127.0.0.1; returns once the text encoder model is ready.

    env: extra variables, e.g. MOVA_TRITON_CHECKPOINT / _DEVICE / _DTYPE for the model (infra/triton/README.md).
    The ManagedProcess's address is the gRPC endpoint (the encoder service's MOVA_ENCODER_TRITON_URL).
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    dist, libs = pytriton_dist()
    repository = model_repository or default_model_repository()
    argv = [
        str(dist / "bin" / "tritonserver"), f"--model-repository={repository}",
        f"--backend-directory={_backends(dist, work_dir)}", f"--cache-directory={dist / 'caches'}",
        "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}",
        "--http-address=127.0.0.1", f"--http-port={http_port}",
        "--metrics-address=127.0.0.1", f"--metrics-port={metrics_port}",
        "--allow-gpu-metrics=false", "--strict-readiness=true", "--exit-on-error=true", "--exit-timeout-secs=5",
    ]
    package_root = str(Path(__file__).resolve().parents[2])
    inherited = {k: os.environ[k] for k in ("LD_LIBRARY_PATH", "PYTHONPATH") if os.environ.get(k)}
    server_env = {
        "LD_LIBRARY_PATH": os.pathsep.join([sysconfig.get_config_var("LIBDIR"), str(libs),
                                            *inherited.get("LD_LIBRARY_PATH", "").split(os.pathsep)]).rstrip(os.pathsep),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join([package_root, *inherited.get("PYTHONPATH", "").split(os.pathsep)]).rstrip(os.pathsep),
        **(env or {}),
    }
    log_path = work_dir / "tritonserver.log"
    managed = ManagedProcess("tritonserver", spawn(argv, log_path, server_env, work_dir), f"127.0.0.1:{grpc_port}",
                             log_path, {"grpc": grpc_port, "http": http_port, "metrics": metrics_port})
    try:
        _wait(managed, lambda: _model_ready(http_port, TEXT_ENCODER_MODEL), timeout_s)
    except LocalStackError as exc:  # the log's tail is a status table: name the model's own error first
        failed = [line for line in log_tail(log_path, 400).splitlines() if "failed to load" in line]
        if failed:
            raise LocalStackError(f"tritonserver: {failed[-1]}\n{exc}") from None
        raise
    return managed
