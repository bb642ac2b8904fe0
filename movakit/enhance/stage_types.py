"""Input and output of the enhance stage (re-exported by `movakit.stages.enhance`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EnhanceRequest:
    """One prompt to enhance. `image` is the encoded first frame (PNG/JPEG/WebP bytes) when the user gave one;
    `enabled=False` returns the prompt untouched."""

    prompt: str
    image: bytes | None = None
    enabled: bool = True


@dataclass(frozen=True)
class EnhanceResult:
    """The prompt actually used, and how it was obtained.

    `backend` names what wrote `prompt`: "rules", "openai", "transformers", or "disabled" (user's prompt as is).
    `fallback_reason` is set when an LLM backend was configured but the rule-based rewrite was used instead.
    `events` are human-readable lines for the job's event log (retries, rejected answers, fallbacks, trims).
    """

    prompt: str
    original_prompt: str
    backend: str
    fallback_reason: str | None
    model: str = ""
    visual_description: str | None = None
    events: tuple[str, ...] = ()
    cached: bool = False
