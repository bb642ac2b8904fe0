"""The deterministic rule-based rewrite: no model, the default backend and the fallback for every LLM backend.

It only rearranges what the user (and the first-frame description, when there is one) wrote into the caption
layout MOVA was trained on (docs/prompt-enhancement.md):

1. an opening paragraph: the first-frame description, then the user's first sentence;
2. the rest of the visual sentences in their original order (quoted speech stays inside them, verbatim);
3. a final paragraph starting "The audio": the user's sound sentences (an `Audio:`/`Sound:`/`Music:`/`SFX:`
   section, or sentences about sound, music, noise, ambience, ...) or, when there are none, one sentence that
   says what was (not) asked for.

It never invents dialogue, sounds or camera motion. Speech marks are normalised to ASCII double quotes without
changing the words. Unambiguous static-implying wording ("a static shot", "stands still", "is motionless") is
removed; ambiguous words ("frozen", "fixed", "steady", adverbial "still") are left as the user wrote them.
Over 250 words, description is trimmed (never quoted speech); if the quotes alone are over the limit,
`PromptTooLongError` says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from movakit.enhance.text import (
    MAX_WORDS,
    count_words,
    flatten_lines,
    normalise_quotes,
    quoted_mask,
    split_sentences,
    truncate_words,
)


class PromptTooLongError(ValueError):
    """The quoted speech alone does not fit in the word limit, so no valid caption can keep it verbatim."""


@dataclass(frozen=True)
class RuleRewrite:
    """A rule-based caption and the notes on what was changed beyond layout (for the job's events)."""

    text: str
    notes: tuple[str, ...]


# An explicit sound section: "Audio: ...", "Sound effects - ...", "SFX: ...". Everything after it is audio.
_AUDIO_LABEL_RE = re.compile(
    r"(?:^|(?<=[\s.;,(]))(audio|sounds?|sound effects|sfx|music|soundtrack)\s*[:\uff1a]\s*", re.IGNORECASE
)
# Words that make a sentence about the sound track when they appear in its first words.
_SOUND_NOUNS = (
    r"audio|sounds?|soundtrack|music|musical|song|melody|tune|noises?|ambien(?:ce|t)|reverb|echo(?:es|ing)?|"
    r"silence|heard|hears?|hearing|tempo|volume|voice-?over|narrat(?:ion|or)"
)
# Sound-making verbs and instruments: a prompt with any of these (or a sound noun) asked for some sound.
_SOUND_MAKERS = (
    r"sings?|singing|laughs?|laughing|shouts?|shouting|screams?|whispers?|barks?|meows?|chirps?|"
    r"rings?|ringing|claps?|hums?|humming|buzz(?:es|ing)?|roars?|rumbles?|crackles?|beeps?|knocks?|"
    r"drums?|guitar|piano|violin|synth|bass|orchestra|choir|thunder|says|asks|replies|speaks|talks"
)
_SOUND_NOUN_RE = re.compile(rf"\b({_SOUND_NOUNS})\b", re.IGNORECASE)
_ANY_SOUND_RE = re.compile(rf"\b({_SOUND_NOUNS}|{_SOUND_MAKERS})\b", re.IGNORECASE)
_SOUND_SENTENCE_LEAD_WORDS = 6
_CJK_SOUND_RE = re.compile(r"声|音乐|音效|音響|音楽|歌")
_CJK_CHAR_RE = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")

# Static-implying wording that can be removed without changing what the user asked for.
_STATIC_ALTERNATIVES = "static|stationary|motionless|unmoving|immobile"
_STATIC_ADJ = f"(?:{_STATIC_ALTERNATIVES})"
_POSTURE_STILL_RE = re.compile(
    r"\b(stands?|sits?|lies?|stays?|remains?|holds?|keeps?|waits?|hovers?)\s+(?:perfectly\s+|completely\s+|"
    r"totally\s+|very\s+)?(?:still|" + _STATIC_ALTERNATIVES + r")\b",
    re.IGNORECASE,
)
_IS_STATIC_RE = re.compile(r"\b(is|are)\s+(?:perfectly\s+|completely\s+|totally\s+)?" + _STATIC_ADJ + r"\b", re.I)
_ARTICLE_STATIC_RE = re.compile(r"\b(a|an|the)\s+" + _STATIC_ADJ + r"\s+(\w)", re.IGNORECASE)
_BARE_STATIC_RE = re.compile(r"\s*\b" + _STATIC_ADJ + r"\b", re.IGNORECASE)

_NO_SOUND_AT_ALL = "The audio carries the natural sounds of the scene, with no speech and no music requested."
_SOUND_FROM_ACTION = "The audio carries the sounds of the action described above."
_SPEECH_NOTE = "Any speech is heard exactly as quoted, in its original language."
_NO_VISUAL = "The video opens on the scene the first frame shows."


@dataclass
class _Piece:
    text: str
    section: str  # "frame" | "opening" | "progression" | "audio"

    @property
    def has_quote(self) -> bool:
        return bool(normalise_quotes(self.text).quotes)


def rule_rewrite(prompt: str, visual_description: str | None = None, *, max_words: int = MAX_WORDS) -> RuleRewrite:
    """Rewrite `prompt` (plus an optional first-frame description) into MOVA's caption layout, deterministically."""
    if not prompt.strip():
        raise ValueError("prompt: must not be empty")
    notes: list[str] = []
    norm = normalise_quotes(flatten_lines(prompt))
    if norm.dropped_marks:
        notes.append(f"removed {len(norm.dropped_marks)} unmatched quotation mark(s): {' '.join(norm.dropped_marks)}")
    quote_words = sum(count_words(q.content) for q in norm.quotes)
    if quote_words > max_words - count_words(_SPEECH_NOTE) - 2:
        raise PromptTooLongError(
            f"prompt: the quoted speech alone is {quote_words} words; a caption keeps speech verbatim and must stay "
            f"within {max_words} words, so shorten the dialogue"
        )

    visual_text, audio_text = _split_audio_label(norm.text)
    pieces: list[_Piece] = [_Piece(s, "frame") for s in _frame_sentences(visual_description)]
    user_sentences = split_sentences(normalise_quotes(visual_text))
    opened = False
    for sentence in user_sentences:
        if not normalise_quotes(sentence).quotes and _is_sound_sentence(sentence):
            pieces.append(_Piece(sentence, "audio"))
        else:
            pieces.append(_Piece(sentence, "progression" if opened else "opening"))
            opened = True
    for sentence in split_sentences(normalise_quotes(audio_text)):
        pieces.append(_Piece(sentence, "audio"))

    removed: list[str] = []
    for piece in pieces:
        piece.text = _remove_static_wording(piece.text, removed)
        if piece.section != "audio" and piece.text[:1].islower():  # sentence case; quotes start with '"'
            piece.text = piece.text[0].upper() + piece.text[1:]
    pieces = [p for p in pieces if count_words(p.text) > 0 or p.has_quote]  # e.g. "Static." emptied
    if removed:
        notes.append("removed static-implying wording: " + ", ".join(removed))

    has_speech = bool(norm.quotes)
    mentions_sound = bool(_ANY_SOUND_RE.search(norm.text))
    text = _assemble(pieces, has_speech, mentions_sound)
    if count_words(text) > max_words:
        text = _trim(pieces, has_speech, mentions_sound, max_words, notes)
    return RuleRewrite(text=text, notes=tuple(notes))


def _split_audio_label(text: str) -> tuple[str, str]:
    """Split at the first `Audio:`-style label that is outside quotes; the part after it is the sound section."""
    inside = quoted_mask(normalise_quotes(text))
    for m in _AUDIO_LABEL_RE.finditer(text):
        if not inside[m.start(1)]:
            return text[: m.start(1)].rstrip(" ;,(-\u2014"), text[m.end() :]
    return text, ""


def _frame_sentences(description: str | None) -> list[str]:
    """Sentences of a first-frame description, with `Label:` line prefixes and empty ("none") lines dropped."""
    if not description or not description.strip():
        return []
    kept: list[str] = []
    seen_quotes: set[str] = set()
    for line in description.splitlines():
        body = re.sub(r"^\s*[-*]?\s*[A-Za-z/ ]{2,30}:\s*", "", line).strip()
        if not body or body.rstrip(".").lower() in ("none", "no readable text", "no text", "n/a"):
            continue
        norm = normalise_quotes(body)
        quotes = {q.content for q in norm.quotes}
        unquoted = norm.text
        for q in reversed(norm.quotes):
            unquoted = unquoted[: q.start] + unquoted[q.end :]
        if quotes and quotes <= seen_quotes and not any(c.isalnum() for c in unquoted):
            continue  # a text/OCR line that repeats labels already quoted above
        seen_quotes |= quotes
        body = norm.text[0].upper() + norm.text[1:]
        kept.append(body if body.endswith((".", "!", "?", "\u3002", '"')) else body + ".")
    return split_sentences(normalise_quotes(" ".join(kept)))


def _is_sound_sentence(sentence: str) -> bool:
    m = _SOUND_NOUN_RE.search(sentence)
    if m is not None and count_words(sentence[: m.start()]) < _SOUND_SENTENCE_LEAD_WORDS:
        return True
    m = _CJK_SOUND_RE.search(sentence)  # CJK counts one word per character, so allow a longer lead
    return m is not None and count_words(sentence[: m.start()]) < 2 * _SOUND_SENTENCE_LEAD_WORDS


def _join(sentences: list[str]) -> str:
    """Join sentences with a space, except between two CJK sentences (those scripts use no spaces)."""
    out = ""
    for sentence in sentences:
        if out and not (_CJK_CHAR_RE.match(out[-1]) and _CJK_CHAR_RE.match(sentence[0])):
            out += " "
        out += sentence
    return out


def _remove_static_wording(sentence: str, removed: list[str]) -> str:
    """Drop unambiguous static-implying words outside quoted speech; record what went."""
    norm = normalise_quotes(sentence)
    out: list[str] = []
    pos = 0
    for q in norm.quotes:
        out.append(_clean_static(norm.text[pos : q.start], removed))
        out.append(norm.text[q.start : q.end])
        pos = q.end
    out.append(_clean_static(norm.text[pos:], removed))
    return "".join(out)


def _clean_static(text: str, removed: list[str]) -> str:
    def record(m: re.Match[str], replacement: str) -> str:
        removed.append(m.group(0).strip())
        return replacement

    text = _POSTURE_STILL_RE.sub(lambda m: record(m, m.group(1)), text)
    text = _IS_STATIC_RE.sub(
        lambda m: record(m, "holds its position" if m.group(1).lower() == "is" else "hold their position"), text
    )
    text = _ARTICLE_STATIC_RE.sub(
        lambda m: (removed.append(m.group(0)[: m.start(2) - m.start(0)].strip()), _article(m.group(1), m.group(2)))[1]
        + " "
        + m.group(2),
        text,
    )
    text = _BARE_STATIC_RE.sub(lambda m: record(m, ""), text)
    return re.sub(r"\s+([,.;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", text))


def _article(original: str, next_letter: str) -> str:
    if original.lower() == "the":
        return original
    word = "an" if next_letter.lower() in "aeiou" else "a"
    return word.capitalize() if original[0].isupper() else word


def _assemble(pieces: list[_Piece], has_speech: bool, mentions_sound: bool) -> str:
    opening = [p.text for p in pieces if p.section in ("frame", "opening")]
    progression = [p.text for p in pieces if p.section == "progression"]
    audio = [p for p in pieces if p.section == "audio"]
    if not any(p.section == "opening" for p in pieces) and not any(p.section == "progression" for p in pieces):
        opening.append(_NO_VISUAL)
    paragraphs = [_join(opening)]
    if progression:
        paragraphs.append(_join(progression))
    paragraphs.append(_audio_paragraph(audio, has_speech, mentions_sound))
    return "\n\n".join(paragraphs)


def _audio_paragraph(audio: list[_Piece], has_speech: bool, mentions_sound: bool) -> str:
    if not audio:
        if has_speech:
            return f"{_SOUND_FROM_ACTION} {_SPEECH_NOTE}"
        return _SOUND_FROM_ACTION if mentions_sound else _NO_SOUND_AT_ALL
    sentences = ["The audio follows the description: " + audio[0].text, *(p.text for p in audio[1:])]
    if has_speech:
        sentences.append(_SPEECH_NOTE)
    return " ".join(sentences)


def _trim(pieces: list[_Piece], has_speech: bool, mentions_sound: bool, max_words: int, notes: list[str]) -> str:
    """Shorten description until the caption fits: drop whole sentences, then cut words; never quoted speech."""

    def total() -> int:
        return count_words(_assemble(pieces, has_speech, mentions_sound))

    before = total()
    first_audio = next((p for p in pieces if p.section == "audio"), None)
    order = (
        [p for p in reversed(pieces) if p.section == "progression" and not p.has_quote]
        + [p for p in reversed(pieces[1:]) if p.section == "frame"]
        + [p for p in reversed(pieces) if p.section == "audio" and p is not first_audio and not p.has_quote]
    )
    dropped = 0
    for piece in order:
        if total() <= max_words:
            break
        pieces.remove(piece)
        dropped += 1
    for piece in [p for p in pieces if not p.has_quote]:
        excess = total() - max_words
        if excess <= 0:
            break
        keep = max(4, count_words(piece.text) - excess)
        piece.text = truncate_words(piece.text, keep)
    for piece in [p for p in pieces if p.has_quote]:
        if total() <= max_words:
            break
        piece.text = _quotes_with_speaker(piece.text)
    after = total()
    if after > max_words:
        raise PromptTooLongError(
            f"prompt: even with all description trimmed the caption is {after} words (limit {max_words}); "
            "shorten the quoted speech"
        )
    notes.append(f"trimmed description from {before} to {after} words ({dropped} sentence(s) dropped)")
    return _assemble(pieces, has_speech, mentions_sound)


def _quotes_with_speaker(sentence: str) -> str:
    """Keep each quoted span with at most the three words before it (`she says, "..."`)."""
    norm = normalise_quotes(sentence)
    parts: list[str] = []
    pos = 0
    for q in norm.quotes:
        lead = norm.text[pos : q.start].split()[-3:]
        parts.append(" ".join([*lead, norm.text[q.start : q.end]]))
        pos = q.end
    return " ".join(parts)
