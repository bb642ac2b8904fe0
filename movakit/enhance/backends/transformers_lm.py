"""Backend for a local transformers causal LM loaded from a folder (config, weights, tokenizer).

Decoding is greedy, so the same prompt gives the same answer. The model is text-only: it cannot describe a
first frame. With a chat template the messages go through it; without one they are laid out as plain text.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from movakit.enhance.backends.base import Answer, Feedback
from movakit.enhance.http import BackendError
from movakit.enhance.prompts import rewrite_messages


class TransformersBackend:
    """A causal LM on one device; one generation at a time."""

    name = "transformers"
    supports_vision = False

    def __init__(self, model_path: str | Path, *, device: str = "cpu", max_tokens: int = 600) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(model_path)
        if not (path / "config.json").is_file():
            raise ValueError(f"MOVA_ENHANCER_MODEL_PATH: {path} has no config.json")
        self.model = str(path)
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self._lm = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
        self._device = device
        self._max_tokens = max_tokens
        self._lock = threading.Lock()

    def rewrite(self, prompt: str, visual_description: str | None, feedback: Feedback | None = None) -> Answer:
        return Answer(text=self._generate(self._render(rewrite_messages(prompt, visual_description, feedback))))

    def describe_image(self, image: bytes) -> Answer:  # noqa: ARG002
        raise BackendError(f"{self.model} is a text-only model and cannot describe an image")

    def _render(self, messages: list[dict[str, str]]) -> str:
        if self._tokenizer.chat_template:
            return self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        parts = [f"{m['role'].capitalize()}:\n{m['content']}" for m in messages]
        return "\n\n".join([*parts, "Assistant:\n"])

    def _generate(self, text: str) -> str:
        encoded = self._tokenizer(text, return_tensors="pt")
        input_ids = encoded["input_ids"].to(self._device)
        limit = self._lm.config.max_position_embeddings
        if input_ids.shape[1] + self._max_tokens > limit:
            raise BackendError(
                f"{self.model}: prompt of {input_ids.shape[1]} tokens plus {self._max_tokens} new tokens exceeds "
                f"the model's {limit} positions"
            )
        pad_id = self._tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self._tokenizer.eos_token_id if self._tokenizer.eos_token_id is not None else 0
        with self._lock, torch.inference_mode():
            output = self._lm.generate(
                input_ids=input_ids,
                attention_mask=encoded["attention_mask"].to(self._device),
                max_new_tokens=self._max_tokens,
                do_sample=False,
                pad_token_id=pad_id,
            )
        return self._tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)
