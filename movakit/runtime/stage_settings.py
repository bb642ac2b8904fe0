"""Settings shared by the model-serving services, read once from `MOVA_<SERVICE>_*` variables and flags.

The mechanism (flag over variable over default, types, validation, redaction) is movakit.runtime.settings.EnvSettings.
`ServiceSettings` holds what every such process has (listen address, S3, checkpoint, device, telemetry);
`StageSettings` adds the Kafka worker's settings. Each stage service's `settings.py` subclasses `StageSettings`
(the trainer's, whose work comes from Celery, subclasses `ServiceSettings`), adds its own fields and sets
`SERVICE` (which names the variables, MOVA_<SERVICE>_<FIELD>, and the program, mova-<service>) and the `listen`
default. The gateway's settings are movakit/services/gateway/settings.py. The prompt
enhancer's backend settings (MOVA_ENHANCER_*, MOVA_FIRST_FRAME_*) are movakit.enhance.settings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from movakit.execution import default_dtype
from movakit.runtime.kafka_auth import ClientAuth
from movakit.runtime.settings import EnvSettings, SettingsError, check_address

# movakit.runtime.telemetry.EXPORTERS, spelled out: importing telemetry (OpenTelemetry, gRPC) here would delay the
# listen-port reservation that service mains make right after loading their settings.
_OTEL_EXPORTERS = ("otlp", "console", "memory", "none")

S = TypeVar("S", bound="ServiceSettings")
MODEL_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ServiceSettings(EnvSettings):
    """Deployment settings every model-serving process has (defaults: the local stack and docker-compose
    addresses): the stage services through StageSettings, and the trainer, which takes its work from Celery."""

    SERVICE: ClassVar[str] = ""  # e.g. "encoder" -> variables MOVA_ENCODER_*, program mova-encoder

    listen: str  # gRPC listen address host:port (each service sets its default port)
    s3_endpoint: str = "127.0.0.1:9000"  # S3 endpoint host:port (SeaweedFS locally, MinIO in compose)
    s3_access_key: str = ""  # S3 access key id, required (`mova stack up` generates the keys)
    s3_secret_key: str = ""  # S3 secret key, required (redacted in logs)
    s3_bucket: str = "movakit"  # bucket holding jobs/<job>/...
    s3_secure: bool = False  # use https for S3
    s3_region: str = "us-east-1"  # S3 region name
    checkpoint: str = ""  # MOVA checkpoint folder; "" -> the cached tiny demo checkpoint (random weights)
    device: str = "cpu"  # torch device for the stage's models
    dtype: str = ""  # float32 | bfloat16 | float16; "" -> default_dtype(device): bfloat16 on CUDA, else float32
    otel_exporter: str = "none"  # none | console | otlp | memory
    otel_endpoint: str = ""  # OTLP gRPC endpoint host:port when otel_exporter=otlp
    # Prometheus /metrics host:port; "" -> 127.0.0.1:<the service's port in movakit.runtime.metrics.METRICS_PORTS>,
    # "none" -> no endpoint
    metrics_listen: str = ""
    replica_id: str = ""  # name of this replica in logs and events; "" -> <hostname>-<pid>

    @classmethod
    def prefix(cls) -> str:
        return f"MOVA_{cls.SERVICE.upper()}_"

    @classmethod
    def prog(cls) -> str:
        return f"mova-{cls.SERVICE.replace('_', '-')}"

    @classmethod
    def load(cls: type[S], argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> S:
        """EnvSettings.load, then the derived defaults (replica "<hostname>-<pid>", see derived_defaults)."""
        settings = super().load(argv, environ)
        return dataclasses.replace(settings, **settings.derived_defaults())

    def derived_defaults(self) -> dict[str, str]:
        return {} if self.replica_id else {"replica_id": f"{os.uname().nodename}-{os.getpid()}"}

    def validate(self) -> None:
        """Raise SettingsError (a ValueError) naming the variable of the first bad value."""
        check_address(self.env_name("listen"), self.listen)
        check_address(self.env_name("s3_endpoint"), self.s3_endpoint)
        if self.otel_exporter not in _OTEL_EXPORTERS:
            raise SettingsError(self.env_name("otel_exporter"),
                                f"one of {', '.join(_OTEL_EXPORTERS)}, got {self.otel_exporter!r}")
        if self.otel_exporter == "otlp" and not self.otel_endpoint:
            raise SettingsError(self.env_name("otel_endpoint"), "required when otel_exporter=otlp")
        if self.metrics_listen not in ("", "none"):
            check_address(self.env_name("metrics_listen"), self.metrics_listen)
        if self.dtype and self.dtype not in MODEL_DTYPES:
            raise SettingsError(self.env_name("dtype"), f"one of {', '.join(MODEL_DTYPES)} or empty, got {self.dtype!r}")
        for name in ("s3_bucket", "s3_access_key", "s3_secret_key"):
            if not getattr(self, name):
                raise SettingsError(self.env_name(name), "must not be empty")

    @property
    def model_dtype(self) -> str:
        """The dtype the models load in: `dtype`, or the device's default when it is empty."""
        return self.dtype or default_dtype(self.device)


@dataclass(frozen=True)
class StageSettings(ServiceSettings):
    """A stage service's settings: ServiceSettings plus the Kafka worker's (its tasks come from Kafka)."""

    kafka_bootstrap: str = "127.0.0.1:9092"  # Kafka bootstrap servers host:port[,host:port]
    group_id: str = ""  # Kafka consumer group; "" -> "mova-<service>"
    kafka_secret: str = ""  # required: the stack's shared key sealing and opening every record (redacted)
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT (local Tansu) | SASL_PLAINTEXT | SASL_SSL (kafka_auth.py)
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"  # with SASL_*: SCRAM-SHA-512 | SCRAM-SHA-256 | PLAIN
    kafka_sasl_username: str = ""  # required with SASL_*
    kafka_sasl_password: str = ""  # required with SASL_* (redacted)
    consume: bool = True  # run the Kafka worker loop; false -> serve the direct gRPC RPC only
    max_attempts: int = 3  # tries of one task on transient S3/Kafka errors before the job fails
    retry_backoff_s: float = 2.0  # wait before the first retry; doubles after each

    def derived_defaults(self) -> dict[str, str]:
        return {**super().derived_defaults(), **({} if self.group_id else {"group_id": self.prog()})}

    def validate(self) -> None:
        super().validate()
        if not self.kafka_bootstrap:
            raise SettingsError(self.env_name("kafka_bootstrap"), "must not be empty")
        if not self.kafka_secret:
            raise SettingsError(self.env_name("kafka_secret"), "must not be empty")
        problem = self.kafka_auth().problem()
        if problem is not None:
            raise SettingsError(self.env_name(f"kafka_{problem[0]}"), problem[1])
        if self.max_attempts < 1:
            raise SettingsError(self.env_name("max_attempts"), f"must be >= 1, got {self.max_attempts}")
        if self.retry_backoff_s < 0:
            raise SettingsError(self.env_name("retry_backoff_s"), f"must be >= 0, got {self.retry_backoff_s}")

    def kafka_auth(self) -> ClientAuth:
        return ClientAuth(self.kafka_security_protocol, self.kafka_sasl_mechanism, self.kafka_sasl_username,
                          self.kafka_sasl_password)


def reserve_listen_port(listen: str) -> socket.socket:
    """Bind (without listening) the service's gRPC address at process start and return the socket.

    While it is held, no outgoing connection of any process can be given this port as its ephemeral local port
    (Linux hands those out from the same range as the 5005x defaults, the same ports again for the same
    destination); `run_stage_service` closes it right before the gRPC server binds.
    """
    host, _, port = listen.rpartition(":")
    sock = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), int(port)))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot reserve {listen}: {exc}") from exc
    return sock


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus any `extra={"fields": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = record.__dict__.get("fields")
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_json_logging(level: int = logging.INFO) -> None:
    """Send every log record to stdout as JSON lines (called once by a service's main)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("kafka").setLevel(logging.WARNING)
