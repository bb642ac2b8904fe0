"""Settings of the prompt-enhancer service: `MOVA_PROMPT_ENHANCER_*` variables or the matching flags.

The enhancer backend itself (rule-based, OpenAI-compatible, local LM) is configured by the stage's own
`MOVA_ENHANCER_*` variables (movakit.stages.enhance.EnhancerSettings); this class holds the deployment side only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from movakit.runtime.stage_settings import StageSettings

DEFAULT_PORT = 50052


@dataclass(frozen=True)
class PromptEnhancerSettings(StageSettings):
    SERVICE: ClassVar[str] = "prompt_enhancer"

    listen: str = f"127.0.0.1:{DEFAULT_PORT}"  # gRPC listen address
