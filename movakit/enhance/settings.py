"""Prompt-enhancer settings: the MOVA_ENHANCER_* and MOVA_FIRST_FRAME_* variables, read by the one settings
mechanism of movakit.runtime.settings.EnvSettings (an empty value counts as unset; bad values name the variable).

| Variable                         | Default  | Meaning                                                           |
|----------------------------------|----------|-------------------------------------------------------------------|
| MOVA_ENHANCER_BACKEND            | rules    | `rules` (no model), `openai` (any OpenAI-compatible chat server), |
|                                  |          | `transformers` (a local causal LM folder)                          |
| MOVA_ENHANCER_BASE_URL           |          | openai: base URL including the version, e.g. http://127.0.0.1:8000/v1 |
| MOVA_ENHANCER_MODEL              |          | openai: model name sent in each request                            |
| MOVA_ENHANCER_API_KEY            |          | openai: bearer token (never logged)                                |
| MOVA_ENHANCER_VISION_MODEL       |          | openai: vision model that describes a given first frame; empty = none |
| MOVA_ENHANCER_TIMEOUT_S          | 60       | openai: seconds per HTTP request                                   |
| MOVA_ENHANCER_MAX_RETRIES        | 2        | openai: extra tries after a timeout, connection error, 429 or 5xx  |
| MOVA_ENHANCER_BACKOFF_S          | 1.0      | openai: first retry delay; doubles each retry                      |
| MOVA_ENHANCER_TEMPERATURE        | 0.7      | openai: sampling temperature (transformers decodes greedily)       |
| MOVA_ENHANCER_MAX_TOKENS         | 600      | both LLM backends: most tokens in one answer                       |
| MOVA_ENHANCER_MODEL_PATH         |          | transformers: folder with config, weights and tokenizer            |
| MOVA_ENHANCER_DEVICE             | cpu      | transformers: torch device                                         |
| MOVA_ENHANCER_CACHE_SIZE         | 256      | cached answers, keyed by (backend, model, prompt, image hash); 0 = off |
| MOVA_FIRST_FRAME_BASE_URL        |          | OpenAI-compatible image endpoint base URL; empty = white frame |
| MOVA_FIRST_FRAME_MODEL           |          | image model name                                                   |
| MOVA_FIRST_FRAME_API_KEY         |          | bearer token (never logged)                                        |
| MOVA_FIRST_FRAME_TIMEOUT_S       | 120      | seconds per image request                                          |
| MOVA_FIRST_FRAME_MAX_RETRIES     | 1        | extra tries after a timeout, connection error, 429 or 5xx          |
| MOVA_FIRST_FRAME_MODEL_PATH      |          | local diffusers text-to-image folder (instead of BASE_URL)         |
| MOVA_FIRST_FRAME_DEVICE          | cpu      | model path: torch device                                           |
| MOVA_FIRST_FRAME_STEPS           | 0        | model path: denoising steps; 0 = the pipeline's own default        |
| MOVA_FIRST_FRAME_BACKOFF_S       | 1.0      | first retry delay; doubles each retry                              |
"""

from __future__ import annotations

from dataclasses import dataclass, field

from movakit.runtime.settings import EnvSettings, SettingsError

BACKENDS = ("rules", "openai", "transformers")


def _base_url(value: str) -> str:
    return value.rstrip("/")


@dataclass(frozen=True)
class FirstFrameSettings(EnvSettings):
    """What draws a first frame for text-only jobs: an OpenAI-compatible image-generation endpoint (base_url) or a
    local diffusers text-to-image folder (model_path), at most one of them; neither keeps the white frame."""

    PREFIX = "MOVA_FIRST_FRAME_"

    base_url: str = field(default="", metadata={"parse": _base_url})  # empty: the white frame is kept
    model: str = ""
    api_key: str = field(default="", repr=False)
    timeout_s: float = 120.0
    max_retries: int = 1
    backoff_s: float = 1.0
    model_path: str = ""  # local diffusers folder (movakit/enhance/local_image.py)
    device: str = "cpu"
    steps: int = 0  # 0: the pipeline's own default number of steps

    def validate(self) -> None:
        if self.base_url and self.model_path:
            raise SettingsError(f"{self.env_name('base_url')} and {self.env_name('model_path')}",
                                "set one of them, not both")
        if self.steps < 0:
            raise SettingsError(self.env_name("steps"), f"{self.steps} must be >= 0")
        if not self.timeout_s > 0:
            raise SettingsError(self.env_name("timeout_s"), f"{self.timeout_s} must be positive")
        if self.max_retries < 0:
            raise SettingsError(self.env_name("max_retries"), f"{self.max_retries} must be >= 0")
        if self.backoff_s < 0:
            raise SettingsError(self.env_name("backoff_s"), f"{self.backoff_s} must be >= 0")

    @property
    def configured(self) -> bool:
        return bool(self.base_url or self.model_path)

    def describe_source(self) -> str:
        """What draws the frame, for a progress line."""
        if self.model_path:
            return f"the local text-to-image model {self.model_path}"
        return f"the image endpoint {self.base_url}" if self.base_url else "nothing (white frame)"


@dataclass(frozen=True)
class EnhancerSettings(EnvSettings):
    """Deployment settings of the prompt enhancer; build with `from_env()` (or directly in tests)."""

    PREFIX = "MOVA_ENHANCER_"

    backend: str = field(default="rules", metadata={"parse": str.lower})
    base_url: str = field(default="", metadata={"parse": _base_url})
    model: str = ""
    api_key: str = field(default="", repr=False)
    vision_model: str = ""
    timeout_s: float = 60.0
    max_retries: int = 2
    backoff_s: float = 1.0
    temperature: float = 0.7
    max_tokens: int = 600
    model_path: str = ""
    device: str = "cpu"
    cache_size: int = 256
    first_frame: FirstFrameSettings = FirstFrameSettings()

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise SettingsError(self.env_name("backend"), f"{self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.backend == "openai" and not (self.base_url and self.model):
            raise SettingsError(f"{self.env_name('base_url')} and {self.env_name('model')}",
                                "both are required for backend openai")
        if self.backend == "transformers" and not self.model_path:
            raise SettingsError(self.env_name("model_path"), "required for backend transformers")
        if not self.timeout_s > 0:
            raise SettingsError(self.env_name("timeout_s"), f"{self.timeout_s} must be positive")
        for name, value in (("backoff_s", self.backoff_s), ("max_retries", self.max_retries),
                            ("cache_size", self.cache_size)):
            if value < 0:
                raise SettingsError(self.env_name(name), f"{value} must be >= 0")
        if self.max_tokens < 1:
            raise SettingsError(self.env_name("max_tokens"), f"{self.max_tokens} must be >= 1")
