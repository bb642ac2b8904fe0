"""What the enhancer needs from an LLM backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Answer:
    """A backend's raw reply and notes on how it was obtained (retries), for the job's events."""

    text: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Feedback:
    """A rejected caption and why, sent back to the model for its one retry."""

    previous_answer: str
    problems: str


class ChatBackend(Protocol):
    """An LLM that rewrites prompts and, when `supports_vision`, describes a first frame.

    Both methods raise `movakit.enhance.http.BackendError` when no answer can be had.
    """

    name: str  # "openai" or "transformers": recorded in results and cache keys
    model: str  # model name or path: part of the cache key
    supports_vision: bool

    def rewrite(self, prompt: str, visual_description: str | None, feedback: Feedback | None = None) -> Answer: ...

    def describe_image(self, image: bytes) -> Answer: ...
