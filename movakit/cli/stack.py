"""`mova stack up|status|restart|down|init`: the whole service stack on 127.0.0.1 without Docker (movakit.runtime.stack)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from movakit.cli import UsageError

DEFAULT_STATE_DIR = Path(".mova") / "stack"


def register(subparsers) -> None:
    parser = subparsers.add_parser("stack", help="run the service stack locally (Tansu, SeaweedFS, five services)")
    sub = parser.add_subparsers(dest="stack_command", required=True, metavar="ACTION")

    up = sub.add_parser("up", help="start Kafka (Tansu), S3 (SeaweedFS), topics, bucket and the five services")
    _state_dir(up)
    up.add_argument("--checkpoint", default="", help="MOVA checkpoint folder (default: the tiny demo checkpoint)")
    up.add_argument("--kafka-port", type=int, default=9092)
    up.add_argument("--s3-port", type=int, default=9000)
    up.add_argument("--gateway-port", type=int, default=50051)
    up.add_argument("--http-port", type=int, default=8080, help="the gateway's HTTP API (/v1/videos)")
    up.add_argument("--no-trainer", dest="trainer", action="store_false",
                    help="run no trainer (and no redis-server): fine-tuning jobs are refused")
    up.add_argument("--redis-port", type=int, default=6379, help="redis-server, the trainer's Celery broker")
    up.add_argument("--trainer-port", type=int, default=50056, help="the trainer's gRPC health")
    up.add_argument("--stage-ports", default="50052,50053,50054,50055",
                    help="gRPC ports of prompt-enhancer,encoder,denoiser,decoder")
    up.add_argument("--denoiser-replicas", type=int, default=1)
    up.add_argument("--denoiser-context-parallel", type=int, default=1, metavar="N",
                    help="ranks per denoiser replica, one device each, splitting every forward (docs/parallel.md)")
    up.add_argument("--access-key", default="", help="S3 access key of the local SeaweedFS (default: generated)")
    up.add_argument("--secret-key", default="", help="S3 secret key of the local SeaweedFS (default: generated)")
    up.add_argument("--otel-exporter", default="none", choices=("none", "console", "otlp"))
    up.add_argument("--otel-endpoint", default="", help="OTLP gRPC endpoint host:port (with --otel-exporter otlp)")
    up.add_argument("--triton", action="store_true",
                    help="also run tritonserver (infra/triton) and let the encoder call it for the text encoder")
    up.add_argument("--triton-port", type=int, default=8001, help="tritonserver's gRPC port (with --triton)")
    up.set_defaults(func=_up)

    st = sub.add_parser("status", help="every address and process of the running stack, alive or not")
    _state_dir(st)
    st.set_defaults(func=_status)

    rs = sub.add_parser("restart", help="stop one service and start it again (it stays part of the stack)")
    rs.add_argument("service", help="a service name as `mova stack status` lists it, e.g. encoder or denoiser-2")
    _state_dir(rs)
    rs.set_defaults(func=_restart)

    it = sub.add_parser("init", help="create the topics and the bucket on running servers (docker-compose's init)")
    it.add_argument("--kafka", default="127.0.0.1:9092", help="Kafka bootstrap host:port")
    it.add_argument("--s3", default="127.0.0.1:9000", help="S3 endpoint host:port")
    it.add_argument("--bucket", default="movakit")
    it.add_argument("--access-key", required=True, help="S3 access key")
    it.add_argument("--secret-key", required=True, help="S3 secret key")
    it.add_argument("--kafka-security-protocol", default="PLAINTEXT",
                    help="PLAINTEXT, SASL_PLAINTEXT or SASL_SSL (SASL password: $MOVA_KAFKA_SASL_PASSWORD)")
    it.add_argument("--kafka-sasl-mechanism", default="SCRAM-SHA-512", help="SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN")
    it.add_argument("--kafka-sasl-username", default="")
    it.set_defaults(func=_init)

    dn = sub.add_parser("down", help="stop every process of the stack and remove its data (logs are kept)")
    _state_dir(dn)
    dn.set_defaults(func=_down)


def _state_dir(parser) -> None:
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help=f"folder for pids, logs and data (default {DEFAULT_STATE_DIR})")


def _up(args) -> int:
    from movakit.runtime.localstack import LocalStackError
    from movakit.runtime.stack import StackConfig, StackError, up

    try:
        ports = tuple(int(p) for p in args.stage_ports.split(","))
    except ValueError:
        raise UsageError(f"--stage-ports: expected four comma-separated ports, got {args.stage_ports!r}") from None
    if len(ports) != 4:
        raise UsageError(f"--stage-ports: expected four ports, got {len(ports)}")
    if args.otel_exporter == "otlp" and not args.otel_endpoint:
        raise UsageError("--otel-endpoint: required with --otel-exporter otlp")
    if args.checkpoint and not Path(args.checkpoint).is_dir():
        raise UsageError(f"--checkpoint: {args.checkpoint} is not a folder")
    cfg = StackConfig(state_dir=args.state_dir.resolve(), checkpoint=args.checkpoint, kafka_port=args.kafka_port,
                      s3_port=args.s3_port, gateway_port=args.gateway_port, http_port=args.http_port,
                      trainer=args.trainer, redis_port=args.redis_port, trainer_port=args.trainer_port,
                      stage_ports=ports,  # type: ignore[arg-type]
                      access_key=args.access_key, secret_key=args.secret_key,
                      denoiser_replicas=args.denoiser_replicas,
                      denoiser_context_parallel=args.denoiser_context_parallel, otel_exporter=args.otel_exporter,
                      otel_endpoint=args.otel_endpoint, triton=args.triton, triton_port=args.triton_port)
    try:
        addresses = up(cfg)
    except (StackError, LocalStackError) as exc:  # LocalStackError: Tansu, SeaweedFS or Triton missing or not starting
        print(f"mova stack up: {exc}")
        return 1
    print("stack is up:")
    for name, address in addresses.items():
        print(f"  {name:<24} {address}")
    print(f"your job-API token is in {cfg.state_dir / 'token'} (mode 0600; `mova submit` reads it there), "
          f"the S3 keys in {cfg.state_dir / 's3-credentials'}")
    print(f"stop it with: mova stack down --state-dir {cfg.state_dir}")
    return 0


def _status(args) -> int:
    from movakit.runtime.stack import StackError, status

    try:
        addresses, processes = status(args.state_dir.resolve())
    except StackError as exc:
        print(f"mova stack status: {exc}")
        return 1
    for name, address in addresses.items():
        print(f"  {name:<24} {address}")
    print(f"  {'PROCESS':<16} {'PID':>8}  {'ADDRESS':<22} STATE")
    healthy = True
    for p in processes:
        state = "alive" if p.alive else "DEAD"
        if p.serving is not None and p.alive:
            state += ", serving" if p.serving else ", NOT SERVING"
        healthy = healthy and p.alive and p.serving is not False
        print(f"  {p.name:<16} {p.pid:>8}  {p.address:<22} {state}")
    return 0 if healthy else 1


def _restart(args) -> int:
    from movakit.runtime.stack import StackError, restart

    try:
        entry = restart(args.state_dir.resolve(), args.service)
    except StackError as exc:
        print(f"mova stack restart: {exc}")
        return 1
    print(f"restarted {entry.name}: pid {entry.pid} on {entry.address}, log {entry.log}")
    return 0


def _init(args) -> int:
    from movakit.runtime.kafka_auth import ClientAuth
    from movakit.runtime.stack import init_backends

    auth = ClientAuth(args.kafka_security_protocol, args.kafka_sasl_mechanism, args.kafka_sasl_username,
                      os.environ.get("MOVA_KAFKA_SASL_PASSWORD", ""))
    problem = auth.problem()
    if problem is not None:
        field = ("$MOVA_KAFKA_SASL_PASSWORD" if problem[0] == "sasl_password"
                 else f"--kafka-{problem[0].replace('_', '-')}")
        print(f"mova stack init: error: {field}: {problem[1]}", file=sys.stderr)
        return 2
    created = init_backends(args.kafka, args.s3, args.bucket, args.access_key, args.secret_key, auth=auth)
    print(f"topics created: {', '.join(created) or 'none (all existed)'}; bucket {args.bucket} ready")
    return 0


def _down(args) -> int:
    from movakit.runtime.stack import StackError, down

    try:
        names = down(args.state_dir.resolve())
    except StackError as exc:
        print(f"mova stack down: {exc}")
        return 1
    print(f"stopped: {', '.join(names)}")
    return 0
