"""Settings of the trainer service: `MOVA_TRAINER_*` variables or the matching flags (see ServiceSettings: the
trainer takes its work from Celery, not Kafka)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from movakit.runtime.settings import SettingsError
from movakit.runtime.stage_settings import ServiceSettings
from movakit.training.spec import HOST_WEIGHTS


@dataclass(frozen=True)
class TrainerSettings(ServiceSettings):
    SERVICE: ClassVar[str] = "trainer"

    listen: str = "127.0.0.1:50056"  # gRPC health and reflection (the work itself comes from Celery)
    celery_broker: str = "redis://127.0.0.1:6379/0"  # Redis URL of the Celery broker
    visibility_timeout_s: float = 3600.0  # a task of a killed trainer is handed to another after this long
    lease_s: float = 900.0  # a job's lease; renewed after every update, so it must outlast one update
    # how the DiT and bridge blocks' matrices wait in host RAM: "model" (the model dtype) or "float8" (half the
    # bytes of bf16, as the official low-resource trainer; every job then trains against FP8-rounded weights)
    host_weights: str = "model"

    def validate(self) -> None:
        super().validate()
        if self.host_weights not in HOST_WEIGHTS:
            raise SettingsError(self.env_name("host_weights"),
                                f"one of {', '.join(HOST_WEIGHTS)}, got {self.host_weights!r}")
