"""A small umT5-style tokenizer built offline with the `tokenizers` library (no download).

Layout follows T5/umT5: <pad>=0, </s>=1, <unk>=2, the 256 byte-fallback pieces <0x00>..<0xFF>, then a Unigram
vocabulary of "▁"-prefixed words and single characters; `</s>` is appended to every sequence. Text outside
the vocabulary (e.g. the Chinese negative prompt) falls back to byte pieces. Saved as `tokenizer.json` plus
the T5 `tokenizer_config.json` / `special_tokens_map.json`, so `T5TokenizerFast.from_pretrained` reloads it.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

_WORDS = (
    "the a an of and in on at to with is are was it its this that by from for as into over under near while "
    "cat dog man woman person people child bird car street city room house water sea sky sun light night day "
    "video audio sound music voice speech says asks replies talking walking running sitting standing looking "
    "camera slowly quickly close up wide shot scene red green blue white black bright dark soft loud quiet "
    "wind rain fire tree trees grass road window door table chair guitar piano drums birds waves footsteps"
).split()
SPECIAL = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}


def tiny_vocab() -> list[tuple[str, float]]:
    """(piece, log-probability score) in id order; deterministic."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"<0x{i:02X}>", 0.0) for i in range(256)]
    vocab += [("▁", -2.0)]
    vocab += [("▁" + w, -3.0 - 0.01 * i) for i, w in enumerate(_WORDS)]
    vocab += [("▁" + c, -6.0) for c in string.ascii_lowercase + string.digits]
    vocab += [(c, -8.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return vocab


def build_tiny_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.Unigram(tiny_vocab(), unk_id=2, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(replacement="▁", prepend_scheme="always")])
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    for token in SPECIAL.values():
        tok.add_special_tokens([token])  # already in the vocabulary: marks them special, ids unchanged
    return tok


def write_tiny_tokenizer(folder: str | Path) -> int:
    """Save the tokenizer files into `folder`; returns the vocabulary size."""
    folder = Path(folder)
    tok = build_tiny_tokenizer()
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "model_max_length": 512, **SPECIAL}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(SPECIAL, indent=2, sort_keys=True) + "\n")
    return tok.get_vocab_size()
