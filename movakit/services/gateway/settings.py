"""Settings of the gateway: `MOVA_GATEWAY_<FIELD>` variables or the matching `--<field-with-dashes>` flags.

Read by the one settings mechanism, movakit.runtime.settings.EnvSettings (flag over variable over default).
Defaults are the local-stack and docker-compose addresses (gateway 127.0.0.1:50051, its HTTP API 127.0.0.1:8080,
Kafka 127.0.0.1:9092, S3 127.0.0.1:9000) and the same S3 bucket as the stage services. Secrets have no default:
the S3 keys, the Kafka secret and the tokens file must be given (`mova stack up` generates them). Read once at
startup by main.py; nothing else reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass

from movakit.runtime import settings as s
from movakit.runtime.kafka_auth import ClientAuth
from movakit.runtime.telemetry import EXPORTERS
from movakit.services.gateway import admission


@dataclass(frozen=True)
class GatewaySettings(s.EnvSettings):
    PREFIX = "MOVA_GATEWAY_"
    PROG = "mova-gateway"

    listen: str = "127.0.0.1:50051"  # gRPC listen address host:port
    http_listen: str = "127.0.0.1:8080"  # HTTP listen address of /v1/videos (http_api.py); "" = no HTTP API
    kafka_bootstrap: str = "127.0.0.1:9092"  # Kafka bootstrap servers host:port[,host:port]
    kafka_secret: str = ""  # required: the stack's shared key sealing and opening every record (redacted)
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT (local Tansu) | SASL_PLAINTEXT | SASL_SSL (kafka_auth.py)
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"  # with SASL_*: SCRAM-SHA-512 | SCRAM-SHA-256 | PLAIN
    kafka_sasl_username: str = ""  # required with SASL_*
    kafka_sasl_password: str = ""  # required with SASL_* (redacted)
    s3_endpoint: str = "127.0.0.1:9000"  # S3 endpoint host:port (SeaweedFS locally, MinIO in compose)
    s3_access_key: str = ""  # S3 access key id, required (redacted in logs)
    s3_secret_key: str = ""  # S3 secret key, required (redacted in logs)
    s3_bucket: str = "movakit"  # bucket holding jobs/<job>/...
    s3_secure: bool = False  # use https for S3
    s3_region: str = "us-east-1"  # S3 region name
    s3_public_endpoint: str = ""  # host:port clients use in artifact URLs (compose: 127.0.0.1:9000); "" = s3_endpoint
    presign_expiry_s: int = 900  # lifetime of artifact download URLs, 60 .. 604800 s
    tokens_file: str = ""  # required: '<tenant> <sha256 of token>' lines (movakit/runtime/auth.py)
    tls_cert_file: str = ""  # PEM certificate chain: serve TLS (with tls_key_file); "" = plaintext
    tls_key_file: str = ""  # PEM private key of tls_cert_file
    tls_client_ca_file: str = ""  # PEM CA: clients must present a certificate it signed (mutual TLS)
    max_active_jobs: int = 64  # Submit answers RESOURCE_EXHAUSTED while this many jobs are queued or running
    gpu_s_per_mpixel_step: float = 0.1  # estimated GPU-seconds per million pixel-steps (frames*h*w*steps / 1e6)
    max_queued_gpu_s: float = 36000.0  # estimated GPU-seconds all unfinished jobs may hold together
    tenant_max_gpu_s: float = 14400.0  # estimated GPU-seconds one tenant's unfinished jobs may hold
    dispatch_slots: int = 4  # dispatched jobs unfinished at once; the others wait, by priority then age (dispatch.py)
    gpus: int = 1  # GPUs working through the queue (divides the retry delay of a refusal)
    max_finished_jobs: int = 10000  # finished jobs kept in memory; older ones are read from S3 (archive.py)
    checkpoint: str = ""  # checkpoint folder whose configs judge requests (movakit/model_rules.py); "" -> tiny demo
    # Stalled jobs (movakit/services/gateway/reaper.py): a job with no event for this long fails with a reason.
    queue_deadline_s: float = 21600.0  # waiting in a stage's inbox (queued, or between two stages)
    enhance_deadline_s: float = 900.0  # a prompt enhancer announced it is working on the job
    encode_deadline_s: float = 900.0  # an encoder is working on the job
    denoise_deadline_s: float = 900.0  # a denoiser is working on the job (it reports every step)
    decode_deadline_s: float = 900.0  # a decoder is working on the job
    artifact_retention_days: int = 7  # jobs/ objects expire this long after their last write (retention.py)
    startup_timeout_s: float = 60.0  # how long to wait for Kafka/S3 and the state replay at startup
    otel_exporter: str = "none"  # none | console | otlp | memory
    otel_endpoint: str = ""  # OTLP gRPC endpoint host:port when otel_exporter=otlp
    # Prometheus /metrics host:port; "" -> 127.0.0.1:9460 (movakit.runtime.metrics.METRICS_PORTS), "none" -> none
    metrics_listen: str = ""
    celery_broker: str = ""  # Redis URL of the trainer's Celery broker; "" -> fine-tuning jobs are refused

    def validate(self) -> None:
        s.check_address(self.env_name("listen"), self.listen)
        if self.http_listen:
            s.check_address(self.env_name("http_listen"), self.http_listen)
        s.check_address(self.env_name("s3_endpoint"), self.s3_endpoint)
        if self.s3_public_endpoint:
            s.check_address(self.env_name("s3_public_endpoint"), self.s3_public_endpoint)
        if not self.kafka_bootstrap:
            raise s.SettingsError(self.env_name("kafka_bootstrap"), "must not be empty")
        for name in ("s3_bucket", "s3_access_key", "s3_secret_key", "tokens_file", "kafka_secret"):
            if not getattr(self, name):
                raise s.SettingsError(self.env_name(name), "must not be empty")
        problem = self.kafka_auth().problem()
        if problem is not None:
            raise s.SettingsError(self.env_name(f"kafka_{problem[0]}"), problem[1])
        s.check_range(self.env_name("presign_expiry_s"), self.presign_expiry_s, 60, 7 * 24 * 3600)
        if self.http_listen and self.tls_cert_file:
            raise s.SettingsError(self.env_name("http_listen"), "the HTTP API calls the gRPC API over loopback "
                                  "without TLS; set it to \"\" when the gateway serves TLS")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise s.SettingsError(self.env_name("tls_key_file"), "tls_cert_file and tls_key_file go together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise s.SettingsError(self.env_name("tls_client_ca_file"), "needs tls_cert_file and tls_key_file")
        s.check_range(self.env_name("max_active_jobs"), self.max_active_jobs, 1, 1_000_000)
        s.check_range(self.env_name("gpu_s_per_mpixel_step"), self.gpu_s_per_mpixel_step, 0.0, 1e6)
        s.check_range(self.env_name("max_queued_gpu_s"), self.max_queued_gpu_s, 1.0, 1e12)
        s.check_range(self.env_name("tenant_max_gpu_s"), self.tenant_max_gpu_s, 1.0, 1e12)
        s.check_range(self.env_name("gpus"), self.gpus, 1, 100_000)
        s.check_range(self.env_name("dispatch_slots"), self.dispatch_slots, 1, 1_000_000)
        s.check_range(self.env_name("max_finished_jobs"), self.max_finished_jobs, 0, 10_000_000)
        for name in ("queue_deadline_s", "enhance_deadline_s", "encode_deadline_s", "denoise_deadline_s",
                     "decode_deadline_s"):
            s.check_range(self.env_name(name), getattr(self, name), 1, 30 * 24 * 3600)
        s.check_range(self.env_name("artifact_retention_days"), self.artifact_retention_days, 1, 3650)
        s.check_range(self.env_name("startup_timeout_s"), self.startup_timeout_s, 1, 3600)
        if self.metrics_listen not in ("", "none"):
            s.check_address(self.env_name("metrics_listen"), self.metrics_listen)
        if self.otel_exporter not in EXPORTERS:
            raise s.SettingsError(self.env_name("otel_exporter"), f"one of {', '.join(EXPORTERS)}, got {self.otel_exporter!r}")
        if self.otel_exporter == "otlp" and not self.otel_endpoint:
            raise s.SettingsError(self.env_name("otel_endpoint"), "required when otel_exporter=otlp")

    def rules(self):
        """The ModelRules of `checkpoint` (the cached tiny demo checkpoint when empty, as the stage services)."""
        from movakit.model_rules import ModelRules

        path = self.checkpoint
        if not path:
            from movakit.loading.demo import default_demo_checkpoint  # imports torch: only for the demo default

            path = str(default_demo_checkpoint())
        return ModelRules.from_checkpoint(path)

    def kafka_auth(self) -> ClientAuth:
        return ClientAuth(self.kafka_security_protocol, self.kafka_sasl_mechanism, self.kafka_sasl_username,
                          self.kafka_sasl_password)

    def admission(self) -> admission.Limits:
        return admission.Limits(self.max_active_jobs, self.max_queued_gpu_s, self.tenant_max_gpu_s, self.gpus)
