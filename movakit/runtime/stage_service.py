"""Wiring shared by the four stage services' main.py: settings -> logging -> telemetry -> models -> gRPC + worker.

A service's main.py only names its settings class, the checkpoint components it loads and how to build its
handler; `run_stage_service` does the rest:
  1. JSON logs on stdout and one "settings" line (secrets redacted);
  2. OpenTelemetry with the configured exporter (service.name = the service), and the Prometheus /metrics
     endpoint on `metrics_listen` (movakit.runtime.metrics);
  3. the object store (bucket created when missing) and the stage handler (models loaded once, resident);
  4. the Kafka worker's producer and consumer (unless `consume` is false), so a broker that cannot be reached
     fails the start before the service reports SERVING;
  5. the gRPC server (the stage's direct RPC, movakit.runtime.tasks.direct_rpc, + health + reflection) on
     `settings.listen`; health answers NOT_SERVING while Kafka or S3 is unreachable (movakit.runtime.health);
  6. the Kafka worker loop in the main thread (unless `consume` is false);
  SIGTERM/SIGINT stop the worker after its current task and the server gracefully.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable

import torch

from movakit.runtime.grpc_server import serve
from movakit.runtime.health import stack_dependencies
from movakit.runtime.kafka import RecordSealer
from movakit.runtime.metrics import MODEL_LOAD_DURATION, metrics_address, setup_metrics
from movakit.runtime.object_store import ObjectStore
from movakit.runtime.stage_settings import ServiceSettings, StageSettings, setup_json_logging
from movakit.runtime.telemetry import setup_telemetry, shutdown_telemetry
from movakit.runtime.tasks import StageHandler, direct_rpc
from movakit.runtime.worker import StageWorker

log = logging.getLogger("movakit.service")

# A dtype setting -> its torch dtype (the stage services, the Triton model and its client).
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def open_checkpoint(settings: ServiceSettings):
    """The MovaCheckpoint of settings.checkpoint (the cached tiny demo checkpoint when it is empty)."""
    from movakit.loading import MovaCheckpoint

    path = settings.checkpoint
    if not path:
        from movakit.loading.demo import default_demo_checkpoint

        path = str(default_demo_checkpoint())
    return MovaCheckpoint(path)


def load_models(settings: ServiceSettings, components: tuple[str, ...]):
    """The checkpoint components this service needs, resident on settings.device."""
    checkpoint = open_checkpoint(settings)
    if checkpoint.random_weights:
        log.warning("checkpoint has RANDOM weights: outputs are noise",
                    extra={"fields": {"checkpoint": str(checkpoint.path)}})
    started = time.perf_counter()
    models = checkpoint.load(components, device=settings.device, dtype=DTYPES[settings.model_dtype])
    MODEL_LOAD_DURATION.record(time.perf_counter() - started, {"components": ",".join(components)})
    log.info("models loaded", extra={"fields": {"checkpoint": str(checkpoint.path), "components": list(components)}})
    return models


def make_store(settings: ServiceSettings) -> ObjectStore:
    store = ObjectStore(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_bucket,
                        secure=settings.s3_secure, region=settings.s3_region)
    store.ensure_bucket()
    return store


def run_stage_service(
    settings: StageSettings,
    service_name: str,
    build_handler: Callable[[ObjectStore], StageHandler],
    reservation: socket.socket | None = None,
) -> int:
    """Run one stage service until SIGTERM/SIGINT; returns the process exit status.

    reservation: the socket from `reserve_listen_port`, held while the models load and the Kafka clients connect;
    closed just before binding.
    """
    setup_json_logging()
    log.info("settings", extra={"fields": {"service": service_name, "settings": settings.redacted()}})
    setup_telemetry(service_name, settings.otel_exporter, settings.otel_endpoint or None)
    setup_metrics(service_name, metrics_address(settings.metrics_listen, service_name))
    store = make_store(settings)
    handler = build_handler(store)
    worker: StageWorker | None = None
    if settings.consume:  # connects to Kafka before the server reports SERVING (and while the port is reserved)
        worker = StageWorker(handler, store, bootstrap=settings.kafka_bootstrap, group_id=settings.group_id,
                             sealer=RecordSealer(settings.kafka_secret), auth=settings.kafka_auth(),
                             service=service_name, replica_id=settings.replica_id,
                             max_attempts=settings.max_attempts, retry_backoff_s=settings.retry_backoff_s)
    if reservation is not None:
        reservation.close()
    server = serve(service_name, direct_rpc(handler, service_name), settings.listen, handle_signals=False,
                   dependencies=stack_dependencies(settings.kafka_bootstrap, settings.s3_endpoint))
    stopped = threading.Event()

    def on_signal(signum, _frame) -> None:
        log.info("stopping", extra={"fields": {"service": service_name, "signal": signum}})
        stopped.set()
        if worker is not None:
            worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if worker is not None:
            worker.run_forever()
        else:
            while not stopped.wait(0.5):
                pass
    finally:
        server.stop(5.0).wait(10.0)
        shutdown_telemetry()
        log.info("stopped", extra={"fields": {"service": service_name}})
    return 0
