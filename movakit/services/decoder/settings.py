"""Settings of the decoder service: `MOVA_DECODER_*` variables or the matching flags (see StageSettings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from movakit.runtime.stage_settings import StageSettings

DEFAULT_PORT = 50055


@dataclass(frozen=True)
class DecoderSettings(StageSettings):
    SERVICE: ClassVar[str] = "decoder"

    listen: str = f"127.0.0.1:{DEFAULT_PORT}"  # gRPC listen address
