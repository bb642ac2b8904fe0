"""umT5 prompt encoder as the official MOVA pipeline runs it (docs/model.md#text-encoder).

Prompts are cleaned (ftfy, HTML-unescape twice, whitespace collapsed, stripped), tokenised to exactly 512
tokens (padding to max_length, truncation, special tokens), encoded by `UMT5EncoderModel` with the attention
mask, and every position past a prompt's true token count is overwritten with zeros. The DiTs then receive
the full (B, 512, d_model) tensor with no mask. Built and loaded by movakit.loading.components.load_text_encoder.
"""

from __future__ import annotations

import html
import re

import ftfy
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase, UMT5EncoderModel

MAX_LENGTH = 512


def clean_prompt(text: str) -> str:
    """ftfy fix, HTML-unescape twice, collapse runs of whitespace to one space, strip."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class TextEncoder(nn.Module):
    def __init__(self, tokenizer: PreTrainedTokenizerBase, model: UMT5EncoderModel, max_length: int = MAX_LENGTH):
        super().__init__()
        self.tokenizer = tokenizer
        self.model = model
        self.max_length = max_length

    @property
    def dim(self) -> int:
        return int(self.model.config.d_model)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.shared.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.shared.weight.device

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cleaned prompts -> (input_ids, attention_mask), each (B, max_length) int64."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts: expected a list of str")
        if not prompts:
            raise ValueError("prompts: expected at least one prompt")
        batch = self.tokenizer(
            [clean_prompt(p) for p in prompts],
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return batch.input_ids, batch.attention_mask

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """prompts -> (B, max_length, d_model) in the encoder's dtype; positions past each prompt's tokens are 0."""
        ids, mask = self.tokenize(prompts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, 512, d_model)
        seq_lens = mask.gt(0).sum(dim=1)  # (B,) true token counts, end-of-sequence token included
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        keep = (positions[None, :] < seq_lens[:, None]).unsqueeze(-1)  # (B, 512, 1)
        return torch.where(keep, hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device))
