"""A small umT5-style tokenizer built offline (no download), saved as T5TokenizerFast files.

Layout follows T5: <pad>=0, </s>=1, <unk>=2, then a Unigram vocabulary of "▁"-prefixed word pieces and single
characters; `</s>` is appended to every sequence. Characters outside the vocabulary map to <unk>.
"""

from __future__ import annotations

import string
from pathlib import Path

_WORDS = (
    "the a an of and in on at to with is are was it its this that by from for as into over under near while "
    "cat dog man woman person people child bird car street city room house water sea sky sun light night day "
    "video audio sound music voice speech says asks replies talking walking running sitting standing looking "
    "camera slowly quickly close up wide shot scene red green blue white black bright dark soft loud quiet "
    "wind rain fire tree trees grass road window door table chair guitar piano drums birds waves footsteps"
).split()


def tiny_vocab() -> list[tuple[str, float]]:
    """(piece, log-probability score) in id order; deterministic."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -3.0 - 0.01 * i) for i, w in enumerate(_WORDS)]
    vocab += [("▁" + c, -6.0) for c in string.ascii_lowercase + string.digits]
    vocab += [(c, -8.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return vocab


def write_tiny_tokenizer(folder: str | Path) -> int:
    """Save the tokenizer files into `folder`; returns the vocabulary size."""
    from transformers import T5TokenizerFast

    tokenizer = T5TokenizerFast(vocab=tiny_vocab(), extra_ids=0, model_max_length=512)
    tokenizer.save_pretrained(str(folder))
    return len(tokenizer)
