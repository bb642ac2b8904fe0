"""Backend for any OpenAI-compatible chat server (vLLM, SGLang, Ollama, hosted providers).

POSTs `{base_url}/chat/completions`; a first frame goes to the vision model as an `image_url` data URL.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable

from PIL import Image, UnidentifiedImageError

from movakit.enhance.backends.base import Answer, Feedback
from movakit.enhance.http import BackendError, RetryPolicy, post_json
from movakit.enhance.prompts import EXTRACT_INSTRUCTION, rewrite_messages
from movakit.enhance.settings import EnhancerSettings


class OpenAICompatBackend:
    """Chat completions over HTTP with a per-request timeout and retries with backoff."""

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "",
        vision_model: str = "",
        policy: RetryPolicy,
        temperature: float = 0.7,
        max_tokens: int = 600,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.vision_model = vision_model
        self.supports_vision = bool(vision_model)
        self._api_key = api_key
        self._policy = policy
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._sleep = time.sleep if sleep is None else sleep

    @classmethod
    def from_settings(cls, settings: EnhancerSettings) -> OpenAICompatBackend:
        return cls(
            base_url=settings.base_url,
            model=settings.model,
            api_key=settings.api_key,
            vision_model=settings.vision_model,
            policy=RetryPolicy(settings.timeout_s, settings.max_retries, settings.backoff_s),
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
        )

    def rewrite(self, prompt: str, visual_description: str | None, feedback: Feedback | None = None) -> Answer:
        return self._chat(self.model, rewrite_messages(prompt, visual_description, feedback))

    def describe_image(self, image: bytes) -> Answer:
        if not self.vision_model:
            raise BackendError("no vision model configured (MOVA_ENHANCER_VISION_MODEL)")
        content = [
            {"type": "text", "text": EXTRACT_INSTRUCTION},
            {"type": "image_url", "image_url": {"url": image_data_url(image)}},
        ]
        return self._chat(self.vision_model, [{"role": "user", "content": content}])

    def _chat(self, model: str, messages: list[dict]) -> Answer:
        notes: list[str] = []
        payload = {
            "model": model,
            "messages": messages,
            "temperature": self._temperature,
            "max_tokens": self._max_tokens,
        }
        reply = post_json(self.url, payload, api_key=self._api_key, policy=self._policy, notes=notes, sleep=self._sleep)
        return Answer(text=_message_text(reply, self.url), notes=tuple(notes))


def image_data_url(image: bytes) -> str:
    """`data:image/<format>;base64,...` for an encoded image; raises ValueError naming `image` if not an image."""
    try:
        with Image.open(io.BytesIO(image)) as im:
            fmt = (im.format or "").lower()
    except (UnidentifiedImageError, OSError):
        raise ValueError("image: the bytes are not a readable image") from None
    mime = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif"}.get(fmt)
    if mime is None:
        raise ValueError(f"image: format {fmt or 'unknown'} is not one of jpeg, png, webp, gif")
    return f"data:{mime};base64," + base64.b64encode(image).decode("ascii")


def _message_text(reply: dict, url: str) -> str:
    """choices[0].message.content as text (a list of text parts is joined)."""
    choices = reply.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BackendError(f"reply from {url} has no choices")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise BackendError(f"reply from {url} has no message content")
    return content
