"""Checks an LLM's caption against the rewrite rules of docs/prompt-enhancement.md before it is used.

Each broken rule gives one `Issue` with a stable `code`:

- `empty`: nothing left after removing reasoning blocks and code fences;
- `too_long`: more than 250 words (CJK characters count one word each);
- `no_audio_paragraph`: the last paragraph does not start with "The audio";
- `no_visual_paragraph`: the audio paragraph is the only one;
- `missing_quote`: a quoted span of the user's prompt is not quoted verbatim in the answer;
- `invented_quote`: the answer quotes words that appear nowhere in the prompt or the first-frame description;
- `unbalanced_quotes`: an opening quotation mark in the answer is never closed;
- `static_word`: a static-implying word ("still", "frozen", ...) the user did not write.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from movakit.enhance.text import MAX_WORDS, count_words, normalise_quotes, paragraphs, static_words

_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE_RE = re.compile(r"^```[a-zA-Z]*\s*\n(.*?)\n```\s*$", re.DOTALL)
_LEAD_LABEL_RE = re.compile(
    r"^\s*(?:\*\*)?(?:rewritten(?: prompt)?|caption|video description|output)(?:\*\*)?\s*:\s*", re.IGNORECASE
)
_AUDIO_START_RE = re.compile(r"^(?:\*\*)?The audio\b")


@dataclass(frozen=True)
class Issue:
    """One broken rule: a stable code and a sentence that names what is wrong."""

    code: str
    detail: str


@dataclass(frozen=True)
class Validation:
    """The outcome of `validate_caption`: valid when `issues` is empty."""

    issues: tuple[Issue, ...]

    @property
    def ok(self) -> bool:
        return not self.issues

    def summary(self) -> str:
        return "; ".join(f"{i.code}: {i.detail}" for i in self.issues) or "ok"


def clean_answer(raw: str) -> str:
    """Remove what chat models wrap around an answer: `<think>` blocks, one code fence, a leading
    "Rewritten:"-style label and surrounding white space. The caption's own words are untouched."""
    text = _THINK_RE.sub("", raw).strip()
    fenced = _FENCE_RE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    return _LEAD_LABEL_RE.sub("", text, count=1).strip()


def validate_caption(
    answer: str, user_prompt: str, *, visual_description: str | None = None, max_words: int = MAX_WORDS
) -> Validation:
    """Check a cleaned caption against every rewrite rule; `user_prompt` is what the user typed."""
    if not answer.strip():
        return Validation((Issue("empty", "the answer has no text"),))
    issues: list[Issue] = []
    words = count_words(answer)
    if words > max_words:
        issues.append(Issue("too_long", f"{words} words, the limit is {max_words}"))

    paras = paragraphs(answer)
    if not _AUDIO_START_RE.match(paras[-1]):
        issues.append(Issue("no_audio_paragraph", f'the last paragraph starts "{paras[-1][:40]}", not "The audio"'))
    elif len(paras) < 2:
        issues.append(Issue("no_visual_paragraph", "the audio paragraph is the only paragraph"))

    source = user_prompt + "\n" + (visual_description or "")
    user_quotes = [q.content for q in normalise_quotes(user_prompt).quotes]
    answer_norm = normalise_quotes(answer)
    answer_quotes = [q.content for q in answer_norm.quotes]
    if answer_norm.dropped_marks:
        issues.append(Issue("unbalanced_quotes", f"unclosed quotation mark(s): {' '.join(answer_norm.dropped_marks)}"))
    for quote in user_quotes:
        if quote not in answer_quotes:
            issues.append(Issue("missing_quote", f'the user\'s quoted words "{quote}" are not quoted verbatim'))
    source_text = normalise_quotes(source).text
    for quote in answer_quotes:
        if quote not in source_text:
            issues.append(Issue("invented_quote", f'"{quote}" is quoted but the user never wrote it'))

    allowed = Counter(static_words(source))
    for word, n in Counter(static_words(answer)).items():
        if n > allowed[word]:
            issues.append(Issue("static_word", f'"{word}" implies a static picture and the user did not use it'))
    return Validation(tuple(issues))
