"""Gateway entry point: `python -m movakit.services.gateway.main [--flag value ...]` (flags and variables: settings.py).

Wires only: settings -> logging and telemetry -> S3 and Kafka clients -> state replay -> event follower (it
archives the finished jobs beyond the memory bound) -> HTTP API (/v1/videos over the gRPC API, http_api.py) ->
gRPC server (JobService + AdapterService + health + reflection) -> dispatch queue -> stalled-job reaper ->
artifact retention (lifecycle rule, sweep).
"""

from __future__ import annotations

import logging
import socket
import sys
from dataclasses import dataclass

import grpc

from movakit.runtime import kafka as mkafka
from movakit.runtime.auth import TokenBook, TokensFileError
from movakit.runtime.grpc_server import serve, tls_credentials
from movakit.runtime.health import stack_dependencies
from movakit.runtime.http_server import HttpServer
from movakit.runtime.object_store import ObjectStore
from movakit.runtime.metrics import metrics_address, set_job_counts, setup_metrics
from movakit.runtime.settings import SettingsError
from movakit.runtime.stage_settings import reserve_listen_port, setup_json_logging
from movakit.runtime.telemetry import setup_telemetry, shutdown_telemetry
from movakit.services.gateway.archive import JobArchive
from movakit.services.gateway.dispatch import Dispatcher
from movakit.lora.registry import AdapterRegistry
from movakit.services.gateway.adapters import AdapterServicer, add_adapter_servicer
from movakit.services.gateway.finetune import FineTuneServicer, add_finetune_servicer
from movakit.services.gateway.follower import EventFollower, replay_job_state
from movakit.services.gateway.http_api import create_app
from movakit.services.gateway.job_store import JobStore
from movakit.services.gateway.reaper import Reaper
from movakit.services.gateway.retention import RetentionSweeper, apply_lifecycle
from movakit.services.gateway.servicer import JobServicer, add_servicer
from movakit.services.gateway.settings import GatewaySettings

log = logging.getLogger("movakit.gateway")


@dataclass
class RunningGateway:
    address: str  # host:port the job API listens on
    server: grpc.Server
    store: JobStore
    follower: EventFollower
    reaper: Reaper
    dispatcher: Dispatcher
    sweeper: RetentionSweeper
    producer: mkafka.Producer
    http: HttpServer | None  # None when http_listen is ""

    def stop(self, grace_s: float = 2.0) -> None:
        if self.http is not None:
            self.http.stop()
        self.server.stop(grace_s).wait()
        self.dispatcher.stop()
        self.reaper.stop()
        self.sweeper.stop()
        self.follower.stop()
        self.producer.flush()
        self.producer.close()


def start_gateway(
    settings: GatewaySettings, *, handle_signals: bool = False, reservation: socket.socket | None = None
) -> RunningGateway:
    """Replays the job state from Kafka, starts following events and serves the job API; returns once the
    state is caught up and the server accepts calls. `reservation` (from reserve_listen_port) holds the listen
    port while the replay's connections are made; it is closed just before the server binds."""
    def store_at(endpoint: str) -> ObjectStore:
        return ObjectStore(endpoint, settings.s3_access_key, settings.s3_secret_key, settings.s3_bucket,
                           secure=settings.s3_secure, region=settings.s3_region)

    rules = settings.rules()  # read first: a checkpoint folder without its configs stops the start here
    tokens = TokenBook.load(settings.tokens_file)  # TokensFileError / OSError before anything starts
    credentials = (tls_credentials(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
                   if settings.tls_cert_file else None)
    objects = store_at(settings.s3_endpoint)
    objects.ensure_bucket()
    apply_lifecycle(objects, settings.artifact_retention_days)
    # URLs are signed for the host clients reach S3 at (signing is local: no request goes to that address).
    signer = store_at(settings.s3_public_endpoint) if settings.s3_public_endpoint else objects
    store = JobStore()
    set_job_counts(store.counts_by_state)
    records_key = mkafka.RecordSealer(settings.kafka_secret)  # seals and opens Kafka records
    kafka_auth = settings.kafka_auth()
    records = replay_job_state(settings.kafka_bootstrap, store, records_key, timeout_s=settings.startup_timeout_s,
                               auth=kafka_auth)
    producer = mkafka.make_producer(settings.kafka_bootstrap, records_key, kafka_auth)
    archive = JobArchive(objects, producer, store, settings.max_finished_jobs)
    follower = EventFollower(settings.kafka_bootstrap, store, producer, records_key,
                             timeout_s=settings.startup_timeout_s, on_finished=archive.evict, auth=kafka_auth)
    follower.start()
    http = None
    try:
        if not follower.caught_up.wait(settings.startup_timeout_s):
            raise TimeoutError(f"gateway: job events not replayed within {settings.startup_timeout_s} s")
        registry = AdapterRegistry(objects)
        dispatcher = Dispatcher(store, producer, settings.dispatch_slots)
        servicer = JobServicer(
            store, objects, producer, dispatcher=dispatcher, signer=signer, archive=archive, tokens=tokens,
            rules=rules,
            admission_limits=settings.admission(), gpu_s_per_mpixel_step=settings.gpu_s_per_mpixel_step,
            presign_expiry_s=settings.presign_expiry_s,
            adapter_exists=registry.exists,
        )
        adapters = AdapterServicer(registry, tokens=tokens, signer=signer, presign_expiry_s=settings.presign_expiry_s)
        if settings.http_listen:  # before the gRPC server: once gRPC health answers, the HTTP API does too
            http = HttpServer(create_app(_loopback(settings.listen), objects), settings.http_listen, name="gateway")
            http.start()
        if reservation is not None:
            reservation.close()
        finetune = FineTuneServicer(objects, _finetune_dispatcher(settings.celery_broker), tokens, registry)
        add_all = (add_servicer(servicer), add_adapter_servicer(adapters), add_finetune_servicer(finetune))
        server = serve("gateway", lambda server: [name for add in add_all for name in add(server)], settings.listen,
                       handle_signals=handle_signals, credentials=credentials,
                       dependencies=stack_dependencies(settings.kafka_bootstrap, settings.s3_endpoint))
    except BaseException:  # a replay timeout or a BindError: stop the follower thread and the producer
        if http is not None:
            http.stop()
        follower.stop()
        producer.close()
        raise
    dispatcher.start()  # the jobs the replay found waiting go first
    reaper = Reaper(settings, store, objects, producer)
    reaper.start()
    sweeper = RetentionSweeper(objects, settings.artifact_retention_days)
    sweeper.start()
    log.info("gateway ready", extra={"fields": {"listen": settings.listen, "http_listen": settings.http_listen,
                                                "jobs_replayed": records}})
    return RunningGateway(settings.listen, server, store, follower, reaper, dispatcher, sweeper, producer, http)


def _loopback(listen: str) -> str:
    """The address this process reaches its own gRPC server at (a wildcard host becomes 127.0.0.1)."""
    host, _, port = listen.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("", "0.0.0.0", "[::]") else listen


def _finetune_dispatcher(broker: str):
    """Queues a fine-tuning job on the trainer's Celery broker; None without one (fine-tuning is refused)."""
    if not broker:
        return None
    from movakit.runtime.celery_app import dispatch_finetune, make_app

    app = make_app(broker)
    return lambda job_id: dispatch_finetune(app, job_id)



def main(argv: list[str] | None = None) -> int:
    setup_json_logging()
    try:
        settings = GatewaySettings.load(sys.argv[1:] if argv is None else argv)
        TokenBook.load(settings.tokens_file)
    except (SettingsError, TokensFileError) as exc:
        print(f"mova-gateway: error: {exc}", file=sys.stderr)
        return 2
    log.info("settings", extra={"fields": settings.redacted()})
    setup_telemetry("gateway", settings.otel_exporter, settings.otel_endpoint or None)
    setup_metrics("gateway", metrics_address(settings.metrics_listen, "gateway"))
    reservation = reserve_listen_port(settings.listen)
    gateway = start_gateway(settings, handle_signals=True, reservation=reservation)
    try:
        gateway.server.wait_for_termination()
    finally:
        gateway.stop()
        shutdown_telemetry()
        log.info("gateway stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
