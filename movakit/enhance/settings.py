"""Prompt-enhancer settings: the one place the MOVA_ENHANCER_* and MOVA_FIRST_FRAME_* variables are read.

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
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

BACKENDS = ("rules", "openai", "transformers")


@dataclass(frozen=True)
class FirstFrameSettings:
    """What draws a first frame for text-only jobs: an OpenAI-compatible image-generation endpoint (base_url) or a
    local diffusers text-to-image folder (model_path), at most one of them; neither keeps the white frame."""

    base_url: str = ""  # empty: not configured, the model's own fallback (a white frame) is kept
    model: str = ""
    api_key: str = field(default="", repr=False)
    timeout_s: float = 120.0
    max_retries: int = 1
    backoff_s: float = 1.0
    model_path: str = ""  # local diffusers folder (movakit/enhance/local_image.py)
    device: str = "cpu"
    steps: int = 0  # 0: the pipeline's own default number of steps

    def __post_init__(self) -> None:
        if self.base_url and self.model_path:
            raise ValueError("MOVA_FIRST_FRAME_BASE_URL and MOVA_FIRST_FRAME_MODEL_PATH: set one of them, not both")
        if self.steps < 0:
            raise ValueError(f"MOVA_FIRST_FRAME_STEPS: {self.steps} must be >= 0")
        if not self.timeout_s > 0:
            raise ValueError(f"MOVA_FIRST_FRAME_TIMEOUT_S: {self.timeout_s} must be positive")
        if self.max_retries < 0:
            raise ValueError(f"MOVA_FIRST_FRAME_MAX_RETRIES: {self.max_retries} must be >= 0")
        if self.backoff_s < 0:
            raise ValueError(f"first_frame backoff_s: {self.backoff_s} must be >= 0")

    @property
    def configured(self) -> bool:
        return bool(self.base_url or self.model_path)

    def describe_source(self) -> str:
        """What draws the frame, for a progress line."""
        if self.model_path:
            return f"the local text-to-image model {self.model_path}"
        return f"the image endpoint {self.base_url}" if self.base_url else "nothing (white frame)"


@dataclass(frozen=True)
class EnhancerSettings:
    """Deployment settings of the prompt enhancer; build with `from_env()` (or directly in tests)."""

    backend: str = "rules"
    base_url: str = ""
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

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"MOVA_ENHANCER_BACKEND: {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ValueError("MOVA_ENHANCER_BASE_URL and MOVA_ENHANCER_MODEL: both are required for backend openai")
        if self.backend == "transformers" and not self.model_path:
            raise ValueError("MOVA_ENHANCER_MODEL_PATH: required for backend transformers")
        for name, value in (("TIMEOUT_S", self.timeout_s), ("BACKOFF_S", self.backoff_s)):
            if value < 0 or (name == "TIMEOUT_S" and value == 0):
                raise ValueError(f"MOVA_ENHANCER_{name}: {value} must be positive")
        for name, value in (("MAX_RETRIES", self.max_retries), ("CACHE_SIZE", self.cache_size)):
            if value < 0:
                raise ValueError(f"MOVA_ENHANCER_{name}: {value} must be >= 0")
        if self.max_tokens < 1:
            raise ValueError(f"MOVA_ENHANCER_MAX_TOKENS: {self.max_tokens} must be >= 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EnhancerSettings:
        """Read every MOVA_ENHANCER_* / MOVA_FIRST_FRAME_* variable once; a bad value raises naming the variable."""
        env = os.environ if environ is None else environ
        first_frame = FirstFrameSettings(
            base_url=env.get("MOVA_FIRST_FRAME_BASE_URL", "").rstrip("/"),
            model=env.get("MOVA_FIRST_FRAME_MODEL", ""),
            api_key=env.get("MOVA_FIRST_FRAME_API_KEY", ""),
            timeout_s=_number(env, "MOVA_FIRST_FRAME_TIMEOUT_S", 120.0, float),
            max_retries=_number(env, "MOVA_FIRST_FRAME_MAX_RETRIES", 1, int),
            model_path=env.get("MOVA_FIRST_FRAME_MODEL_PATH", ""),
            device=env.get("MOVA_FIRST_FRAME_DEVICE", "cpu"),
            steps=_number(env, "MOVA_FIRST_FRAME_STEPS", 0, int),
        )
        return cls(
            backend=env.get("MOVA_ENHANCER_BACKEND", "rules").strip().lower() or "rules",
            base_url=env.get("MOVA_ENHANCER_BASE_URL", "").rstrip("/"),
            model=env.get("MOVA_ENHANCER_MODEL", ""),
            api_key=env.get("MOVA_ENHANCER_API_KEY", ""),
            vision_model=env.get("MOVA_ENHANCER_VISION_MODEL", ""),
            timeout_s=_number(env, "MOVA_ENHANCER_TIMEOUT_S", 60.0, float),
            max_retries=_number(env, "MOVA_ENHANCER_MAX_RETRIES", 2, int),
            backoff_s=_number(env, "MOVA_ENHANCER_BACKOFF_S", 1.0, float),
            temperature=_number(env, "MOVA_ENHANCER_TEMPERATURE", 0.7, float),
            max_tokens=_number(env, "MOVA_ENHANCER_MAX_TOKENS", 600, int),
            model_path=env.get("MOVA_ENHANCER_MODEL_PATH", ""),
            device=env.get("MOVA_ENHANCER_DEVICE", "cpu"),
            cache_size=_number(env, "MOVA_ENHANCER_CACHE_SIZE", 256, int),
            first_frame=first_frame,
        )

    def describe(self) -> dict[str, object]:
        """The settings as a flat dict for a startup log line, with API keys redacted."""
        out: dict[str, object] = dataclasses.asdict(self)
        del out["first_frame"]
        out["api_key"] = "***" if self.api_key else ""
        ff = self.first_frame
        out.update(
            first_frame_base_url=ff.base_url,
            first_frame_model=ff.model,
            first_frame_api_key="***" if ff.api_key else "",
            first_frame_timeout_s=ff.timeout_s,
            first_frame_max_retries=ff.max_retries,
            first_frame_model_path=ff.model_path,
            first_frame_device=ff.device,
            first_frame_steps=ff.steps,
        )
        return out


def _number(env: Mapping[str, str], name: str, default, kind):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name}: {raw!r} is not a valid {kind.__name__}") from None
