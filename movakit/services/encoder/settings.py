"""Settings of the encoder service: `MOVA_ENCODER_*` variables or the matching flags (see StageSettings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from movakit.runtime.settings import SettingsError, check_address
from movakit.runtime.stage_settings import StageSettings

DEFAULT_PORT = 50053


@dataclass(frozen=True)
class EncoderSettings(StageSettings):
    SERVICE: ClassVar[str] = "encoder"

    listen: str = f"127.0.0.1:{DEFAULT_PORT}"  # gRPC listen address
    # Triton gRPC endpoint host:port serving infra/triton's text encoder; "" -> the text encoder runs in-process.
    # The Triton model must load the same checkpoint in the same dtype (MOVA_TRITON_CHECKPOINT / MOVA_TRITON_DTYPE).
    triton_url: str = ""
    triton_model: str = "umt5_encoder"  # model name in the Triton repository
    triton_timeout_s: float = 120.0  # deadline of one Triton request

    def validate(self) -> None:
        super().validate()
        if self.triton_url:
            check_address(self.env_name("triton_url"), self.triton_url)
        if not self.triton_model:
            raise SettingsError(self.env_name("triton_model"), "must not be empty")
        if self.triton_timeout_s <= 0:
            raise SettingsError(self.env_name("triton_timeout_s"), f"must be > 0, got {self.triton_timeout_s}")
