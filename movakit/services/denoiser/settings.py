"""Settings of the denoiser service: `MOVA_DENOISER_*` variables or the matching flags (see StageSettings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from movakit.runtime.settings import SettingsError
from movakit.runtime.stage_settings import StageSettings

DEFAULT_PORT = 50054


@dataclass(frozen=True)
class DenoiserSettings(StageSettings):
    SERVICE: ClassVar[str] = "denoiser"

    listen: str = f"127.0.0.1:{DEFAULT_PORT}"  # gRPC listen address
    latent_checkpoint_every: int = 5  # write latents + step to jobs/<job>/denoise/checkpoint-<step> every K steps (0: never)
    lora_cache_size: int = 4  # LoRA adapters kept in memory (least recently used dropped first; 0: read per task)
    # ranks of this replica, one device each, splitting every forward (docs/parallel.md); 1: this process alone
    context_parallel: int = 1
    compile: bool = False  # torch.compile the DiT and bridge blocks (movakit.execution.compile_denoiser)

    def validate(self) -> None:
        super().validate()
        if self.latent_checkpoint_every < 0:
            raise SettingsError(self.env_name("latent_checkpoint_every"),
                                f"must be >= 0, got {self.latent_checkpoint_every}")
        if self.lora_cache_size < 0:
            raise SettingsError(self.env_name("lora_cache_size"), f"must be >= 0, got {self.lora_cache_size}")
        if self.context_parallel < 1:
            raise SettingsError(self.env_name("context_parallel"), f"must be >= 1, got {self.context_parallel}")
        if self.context_parallel > 1 and self.device not in ("cpu", "cuda"):
            raise SettingsError(self.env_name("device"), "cpu or cuda when context_parallel > 1 (rank r runs on "
                                f"cuda:<its local rank>), got {self.device!r}")
