"""Text helpers shared by the rule-based rewrite and the validator: quotes, words, sentences, static words.

Speech is whatever a user puts between double quotes. Typographic and CJK quotation marks count too
(“…”, „…“, 「…」, 『…』, «…», ＂…＂); `normalise_quotes` turns every such pair into ASCII double quotes without
touching the words between them, so both the rewrite and the validator compare quoted spans one way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_WORDS = 250

# Opening mark -> the marks that may close it. Straight quotes pair with the next straight quote.
_QUOTE_PAIRS: dict[str, str] = {
    '"': '"',
    "\u201c": "\u201d",  # “ … ”
    "\u201e": "\u201c\u201d",  # „ … “ (German) or „ … ” (Polish)
    "\u300c": "\u300d",  # 「 … 」
    "\u300e": "\u300f",  # 『 … 』
    "\u00ab": "\u00bb",  # « … »
    "\uff02": "\uff02",  # ＂ … ＂ (full width)
}

# Characters that count one word each: CJK ideographs, kana. Everything else splits on white space.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD_RE = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")

# Words that make MOVA render a frozen picture. Only whole words are matched, case-insensitively.
STATIC_WORDS: tuple[str, ...] = (
    "static",
    "stationary",
    "still",
    "fixed",
    "motionless",
    "freeze",
    "frozen",
    "steady",
    "unmoving",
    "immobile",
)
_STATIC_RE = re.compile(r"\b(" + "|".join(STATIC_WORDS) + r")\b", re.IGNORECASE)


@dataclass(frozen=True)
class Quote:
    """One quoted span of a normalised text: `text[start:end]` is `"content"` including both marks."""

    start: int
    end: int
    content: str


@dataclass(frozen=True)
class NormalisedText:
    """A text whose speech marks are all ASCII double quotes, with what was changed to get there."""

    text: str
    quotes: tuple[Quote, ...]
    dropped_marks: tuple[str, ...]  # opening marks that had no closing mark and were removed


def normalise_quotes(text: str) -> NormalisedText:
    """Rewrite every paired quotation mark to ASCII `"`, keeping the quoted words exactly.

    White space just inside the marks is dropped (`« Bonjour »` -> `"Bonjour"`) and runs of white space inside
    are collapsed to one space (so a line break in speech compares equal to a space). An opening mark with no
    closing mark is removed and reported in `dropped_marks`; stray closing marks are left as they are.
    """
    out: list[str] = []
    quotes: list[Quote] = []
    dropped: list[str] = []
    pos = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        closers = _QUOTE_PAIRS.get(ch)
        if closers is None:
            i += 1
            continue
        close_at = _find_any(text, closers, i + 1)
        out.append(text[pos:i])
        if close_at < 0:
            dropped.append(ch)
            pos = i + 1
            i += 1
            continue
        content = " ".join(text[i + 1 : close_at].split())
        start = sum(len(s) for s in out)
        rendered = f'"{content}"'
        out.append(rendered)
        quotes.append(Quote(start=start, end=start + len(rendered), content=content))
        pos = close_at + 1
        i = close_at + 1
    out.append(text[pos:])
    return NormalisedText(text="".join(out), quotes=tuple(quotes), dropped_marks=tuple(dropped))


def quoted_mask(norm: NormalisedText) -> list[bool]:
    """mask[k] is True when `norm.text[k]` lies in a quoted span (both marks included)."""
    mask = [False] * len(norm.text)
    for q in norm.quotes:
        mask[q.start : q.end] = [True] * (q.end - q.start)
    return mask


def _find_any(text: str, chars: str, start: int) -> int:
    hits = [j for j in (text.find(c, start) for c in chars) if j >= 0]
    return min(hits) if hits else -1


_ITEM_ENDS = (".", "!", "?", ":", "\u3002", "\uff01", "\uff1f")  # an item ending so needs no full stop
_ITEM_ENDS += ('"', "\u201c", "\u201d", "\u300d", "\u300f", "\u00bb", "\uff02")  # nor one ending in a quote
_BULLET_RE = re.compile(r"^\s*(?:[-*\u2022\u00b7]|\d{1,2}[.)])\s+")


def flatten_lines(text: str) -> str:
    """One line of text: bulleted items (`- `, `* `, `• `, `1. `, continued on following unbulleted lines) lose
    the marker and end with a full stop when they had no closing punctuation; white space runs become one space."""
    lines = text.splitlines()
    if any(_BULLET_RE.match(line) for line in lines):
        items: list[str] = []
        for line in lines:
            if _BULLET_RE.match(line) or not items:
                items.append(_BULLET_RE.sub("", line).strip())
            else:
                items[-1] = f"{items[-1]} {line.strip()}"
        for k, item in enumerate(items):
            if item and not item.endswith(_ITEM_ENDS):
                items[k] = item + ("\u3002" if re.match(rf"[{_CJK}]", item[-1]) else ".")
        text = " ".join(items)
    return " ".join(text.split())


def count_words(text: str) -> int:
    """Words as the 250-word rule counts them: white-space separated tokens that hold a letter or digit,
    with every CJK ideograph or kana counted as one word (those scripts use no spaces)."""
    return sum(1 for tok in _WORD_RE.findall(text) if any(c.isalnum() for c in tok))


def truncate_words(text: str, keep: int) -> str:
    """The first `keep` words of `text` (as `count_words` counts them), ending with a full stop."""
    count = 0
    for m in _WORD_RE.finditer(text):
        if any(c.isalnum() for c in m.group(0)):
            count += 1
            if count == keep:
                cut = text[: m.end()].rstrip(",;:\u2014-")
                return cut if cut.endswith((".", "!", "?", "\u3002")) else cut + "."
    return text


def static_words(text: str) -> list[str]:
    """Static-implying words found in `text` outside quoted speech, lower-cased, in order."""
    norm = normalise_quotes(text)
    plain = _without_quotes(norm)
    return [m.group(1).lower() for m in _STATIC_RE.finditer(plain)]


def _without_quotes(norm: NormalisedText) -> str:
    parts: list[str] = []
    pos = 0
    for q in norm.quotes:
        parts.append(norm.text[pos : q.start])
        parts.append(" ")
        pos = q.end
    parts.append(norm.text[pos:])
    return "".join(parts)


def paragraphs(text: str) -> list[str]:
    """Non-empty paragraphs, stripped. Any line break separates paragraphs (captions use a blank line, but a
    model that puts each paragraph on its own line means the same)."""
    return [p.strip() for p in re.split(r"\n+", text.strip()) if p.strip()]


# Sentence ends: . ! ? (and their CJK forms) outside quotes, followed by space or end of text.
# CJK full stops need no following space. A full stop after a common abbreviation does not end a sentence.
_SENTENCE_END_RE = re.compile(r"(?:[.!?…]+(?=\s|$)|[。！？]+)")
_ABBREVIATION_RE = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|vs|etc|e\.g|i\.e)\.$", re.IGNORECASE)
_LATIN_ENDS = (".", "!", "?", "…")
_CJK_ENDS = ("。", "！", "？")
_UPPER_NEXT_RE = re.compile(r"\s+[A-Z]")


def split_sentences(norm: NormalisedText) -> list[str]:
    """Split a normalised text into sentences without ever cutting inside a quoted span.

    Terminal punctuation inside quotes does not end the sentence (`She says, "Stop." Then she leaves.`
    gives two sentences). Each sentence is stripped and keeps its own punctuation.
    """
    text = norm.text
    inside = quoted_mask(norm)
    cuts = [
        m.end()
        for m in _SENTENCE_END_RE.finditer(text)
        if not inside[m.start()] and not _ABBREVIATION_RE.search(text, 0, m.end())
    ]
    for q in norm.quotes:
        # A quote that ends its own sentence (`"Stop." Then ...`, `"你好。"然后...`) ends the outer one too.
        if q.content.endswith(_CJK_ENDS) or (q.content.endswith(_LATIN_ENDS) and _UPPER_NEXT_RE.match(text, q.end)):
            cuts.append(q.end)
    sentences: list[str] = []
    pos = 0
    for end in sorted(set(cuts)):
        piece = text[pos:end].strip()
        if piece:
            sentences.append(piece)
        pos = end
    tail = text[pos:].strip()
    if tail:
        sentences.append(tail)
    return sentences
