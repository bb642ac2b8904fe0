"""Settings of the encoder service: `MOVA_ENCODER_*` variables or the matching flags (see StageSettings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from movakit.runtime.stage_settings import StageSettings

DEFAULT_PORT = 50053


@dataclass(frozen=True)
class EncoderSettings(StageSettings):
    SERVICE: ClassVar[str] = "encoder"

    listen: str = f"127.0.0.1:{DEFAULT_PORT}"  # gRPC listen address
