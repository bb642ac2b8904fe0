"""Process supervision for `mova stack up|status|down|init`: the whole stack on 127.0.0.1, without Docker.

`up` starts Tansu (Kafka protocol) and SeaweedFS (S3 with access keys) through movakit.runtime.localstack,
creates the topics and the bucket, then one process per service (`python -m movakit.services.<name>.main`), each
configured through its MOVA_<SERVICE>_* variables. All logs go to <state_dir>/logs/<name>.log; the processes
(pid, start time, address, log) are recorded in <state_dir>/stack.json so `status` and `down` can find them from
another shell. Every process runs in its own session, so it outlives the `mova stack up` command.
The default addresses are those of docker-compose.yml; tests pass other ports so a user's stack is untouched.
Every service, the gateway included, gets the same checkpoint folder: the gateway judges requests by its configs
(movakit/model_rules.py), so on the tiny demo checkpoint tiny sizes such as 32x32 are accepted. `init_backends` (`mova stack init`) only creates topics and the bucket on servers
that already run (docker-compose's one-shot init service).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from movakit.runtime import localstack
from movakit.runtime.grpc_server import check_health
from movakit.runtime.object_store import ObjectStore
from movakit.runtime.topics import ensure_topics

STATE_FILE = "stack.json"
# The stage services in pipeline order, with the settings prefix each one reads (movakit/services/<dir>/settings.py).
STAGE_SERVICES = (("prompt-enhancer", "prompt_enhancer"), ("encoder", "encoder"), ("denoiser", "denoiser"),
                  ("decoder", "decoder"))


class StackError(RuntimeError):
    """The stack could not start, or its state folder is in use / unreadable."""


@dataclass(frozen=True)
class StackConfig:
    """Where and how `up` runs the stack. Ports default to the docker-compose.yml addresses."""

    state_dir: Path
    checkpoint: str = ""  # "" -> the cached tiny demo checkpoint (the same one `mova generate` uses)
    kafka_port: int = 9092
    s3_port: int = 9000
    gateway_port: int = 50051
    stage_ports: tuple[int, int, int, int] = (50052, 50053, 50054, 50055)  # enhancer, encoder, denoiser, decoder
    access_key: str = "movakit"
    secret_key: str = "movakit-secret"
    bucket: str = "movakit"
    denoiser_replicas: int = 1  # replicas share mova.denoise as one consumer group; extra ones use free ports
    otel_exporter: str = "none"  # passed to every service: none | console | otlp
    otel_endpoint: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. gateway test limits, latent checkpoint interval
    ready_timeout_s: float = 120.0

    def validate(self) -> None:
        ports = [self.kafka_port, self.s3_port, self.gateway_port, *self.stage_ports]
        if len(set(ports)) != len(ports):
            raise StackError(f"ports must differ, got {ports}")
        if not all(1 <= port <= 65535 for port in ports):
            raise StackError(f"ports must lie in 1..65535, got {ports}")
        if self.denoiser_replicas < 1:
            raise StackError(f"--denoiser-replicas: must be >= 1, got {self.denoiser_replicas}")


@dataclass(frozen=True)
class ProcessEntry:
    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat start time: guards against a recycled pid
    address: str
    log: str
    kind: str  # "infra" | "service"


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process from /proc/<pid>/stat; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the fields after "(comm)": state is the 3rd field, starttime the 22nd
    return fields[0], int(fields[19])


def _start_ticks(pid: int) -> int:
    stat = _proc_stat(pid)
    return -1 if stat is None else stat[1]


def is_alive(entry: ProcessEntry) -> bool:
    """True while the recorded process (same pid AND same start time) is running and not a zombie."""
    stat = _proc_stat(entry.pid)
    return stat is not None and stat[0] != "Z" and stat[1] == entry.start_ticks


def _service_env(cfg: StackConfig, prefix: str, listen: str, checkpoint: str, replica: str) -> dict[str, str]:
    p = f"MOVA_{prefix.upper()}_"
    env = {
        f"{p}LISTEN": listen, f"{p}KAFKA_BOOTSTRAP": f"127.0.0.1:{cfg.kafka_port}",
        f"{p}S3_ENDPOINT": f"127.0.0.1:{cfg.s3_port}", f"{p}S3_ACCESS_KEY": cfg.access_key,
        f"{p}S3_SECRET_KEY": cfg.secret_key, f"{p}S3_BUCKET": cfg.bucket, f"{p}OTEL_EXPORTER": cfg.otel_exporter,
        f"{p}OTEL_ENDPOINT": cfg.otel_endpoint, f"{p}CHECKPOINT": checkpoint,
    }
    if prefix != "gateway":
        env[f"{p}REPLICA_ID"] = replica
    return env


def _spawn_service(cfg: StackConfig, name: str, module: str, env: dict[str, str], address: str) -> ProcessEntry:
    log_path = cfg.state_dir / "logs" / f"{name}.log"
    proc = localstack.spawn([sys.executable, "-m", module], log_path,
                            {"PYTHONUNBUFFERED": "1", **env, **cfg.extra_env}, cfg.state_dir)
    return ProcessEntry(name, proc.pid, _start_ticks(proc.pid), address, str(log_path), "service")


def _write_state(cfg: StackConfig, entries: list[ProcessEntry], addresses: dict[str, str]) -> None:
    state = {"addresses": addresses, "processes": [asdict(e) for e in entries]}
    tmp = cfg.state_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(cfg.state_dir / STATE_FILE)


def read_state(state_dir: Path) -> tuple[dict[str, str], list[ProcessEntry]]:
    """(addresses, processes) recorded by `up`; StackError when there is no stack in state_dir."""
    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        raise StackError(f"no stack recorded in {state_dir} (run `mova stack up` first)")
    state = json.loads(path.read_text())
    return state["addresses"], [ProcessEntry(**e) for e in state["processes"]]


def init_backends(kafka: str, s3: str, bucket: str, access_key: str, secret_key: str, *,
                  timeout_s: float = 60.0) -> list[str]:
    """Create every topic of movakit.runtime.topics and the bucket on running servers (idempotent); returns the
    topics created. Used by `up` and by docker-compose's one-shot `init` service (`mova stack init`)."""
    created = ensure_topics(kafka, timeout_s=timeout_s)
    ObjectStore(s3, access_key, secret_key, bucket).ensure_bucket()
    return created


def up(cfg: StackConfig, *, log=print) -> dict[str, str]:
    """Start everything, wait until every service answers gRPC health; returns the addresses.

    On any failure the processes started so far are stopped and StackError carries the failing log's tail.
    """
    cfg.validate()
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    if (cfg.state_dir / STATE_FILE).is_file():
        _, old = read_state(cfg.state_dir)
        if any(is_alive(e) for e in old):
            raise StackError(f"a stack is already running from {cfg.state_dir} (`mova stack down` first)")
    for port in (cfg.kafka_port, cfg.s3_port, cfg.gateway_port, *cfg.stage_ports):
        if localstack.port_open(port):
            raise StackError(f"port 127.0.0.1:{port} is already in use")
    entries: list[ProcessEntry] = []
    addresses = {"kafka": f"127.0.0.1:{cfg.kafka_port}", "s3": f"127.0.0.1:{cfg.s3_port}",
                 "gateway": f"127.0.0.1:{cfg.gateway_port}", "logs": str(cfg.state_dir / "logs")}
    try:
        data = cfg.state_dir / "data"
        tansu = localstack.start_tansu(cfg.kafka_port, data / "tansu")
        entries.append(ProcessEntry("tansu", tansu.pid, _start_ticks(tansu.pid), tansu.address,
                                    str(tansu.log_path), "infra"))
        _write_state(cfg, entries, addresses)
        weed = localstack.start_seaweedfs(cfg.s3_port, data / "seaweedfs", cfg.access_key, cfg.secret_key)
        entries.append(ProcessEntry("seaweedfs", weed.pid, _start_ticks(weed.pid), weed.address,
                                    str(weed.log_path), "infra"))
        _write_state(cfg, entries, addresses)
        log(f"kafka (tansu) on {tansu.address}, s3 (seaweedfs) on {weed.address}")
        init_backends(addresses["kafka"], addresses["s3"], cfg.bucket, cfg.access_key, cfg.secret_key)

        checkpoint = cfg.checkpoint
        if not checkpoint:  # resolved once here so the services do not race to build the cache
            from movakit.loading.demo import default_demo_checkpoint

            checkpoint = str(default_demo_checkpoint())
        addresses["checkpoint"] = checkpoint
        gateway = f"127.0.0.1:{cfg.gateway_port}"
        gateway_env = _service_env(cfg, "gateway", gateway, checkpoint, "")
        entries.append(_spawn_service(cfg, "gateway", "movakit.services.gateway.main", gateway_env, gateway))
        for (name, prefix), port in zip(STAGE_SERVICES, cfg.stage_ports, strict=True):
            replicas = cfg.denoiser_replicas if name == "denoiser" else 1
            for i in range(replicas):
                listen = f"127.0.0.1:{port if i == 0 else localstack.free_port()}"
                label = name if replicas == 1 else f"{name}-{i + 1}"
                env = _service_env(cfg, prefix, listen, checkpoint, label)
                entries.append(_spawn_service(cfg, label, f"movakit.services.{prefix}.main", env, listen))
                addresses[label] = listen
        _write_state(cfg, entries, addresses)
        _wait_healthy(cfg, [e for e in entries if e.kind == "service"])
    except BaseException:
        _stop_all(entries)
        (cfg.state_dir / STATE_FILE).unlink(missing_ok=True)
        raise
    return addresses


def _wait_healthy(cfg: StackConfig, services: list[ProcessEntry]) -> None:
    deadline = time.monotonic() + cfg.ready_timeout_s
    pending = list(services)
    while pending:
        for entry in list(pending):
            if not is_alive(entry):
                raise StackError(f"{entry.name} exited during startup; log {entry.log}:\n{localstack.log_tail(entry.log, 25)}")
            if check_health(entry.address, timeout_s=1.0):
                pending.remove(entry)
        if pending and time.monotonic() > deadline:
            names = ", ".join(e.name for e in pending)
            raise StackError(f"not healthy after {cfg.ready_timeout_s} s: {names}; log:\n{localstack.log_tail(pending[0].log, 25)}")
        if pending:
            time.sleep(0.3)


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    pid: int
    address: str
    alive: bool
    serving: bool | None  # gRPC health of a service; None for infra processes
    log: str


def status(state_dir: Path) -> tuple[dict[str, str], list[ProcessStatus]]:
    """Every recorded process: alive or not, and for services whether gRPC health answers SERVING."""
    addresses, entries = read_state(state_dir)
    out = []
    for e in entries:
        alive = is_alive(e)
        serving = (alive and check_health(e.address, timeout_s=1.0)) if e.kind == "service" else None
        out.append(ProcessStatus(e.name, e.pid, e.address, alive, serving, e.log))
    return addresses, out


def _stop_all(entries: list[ProcessEntry], timeout_s: float = 15.0) -> None:
    """SIGTERM services first (they finish their task and flush), then the infra; SIGKILL what is left."""
    for group in ("service", "infra"):
        targets = [e for e in entries if e.kind == group and is_alive(e)]
        for e in targets:
            os.kill(e.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(is_alive(e) for e in targets) and time.monotonic() < deadline:
            _reap(targets)
            time.sleep(0.1)
        for e in targets:
            if is_alive(e):
                os.kill(e.pid, signal.SIGKILL)
        _reap(targets)


def _reap(entries: list[ProcessEntry]) -> None:
    """Collect these processes if they are children of this process (`up` and `down` in one process, e.g. tests);
    a zombie would otherwise look alive."""
    for e in entries:
        try:
            os.waitpid(e.pid, os.WNOHANG)
        except ChildProcessError:
            pass


def down(state_dir: Path) -> list[str]:
    """Stop every recorded process and remove the state and the broker/S3 data; logs are kept."""
    _, entries = read_state(state_dir)
    _stop_all(entries)
    shutil.rmtree(Path(state_dir) / "data", ignore_errors=True)
    (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)
    return [e.name for e in entries]
