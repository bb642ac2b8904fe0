"""The enhancer: LLM rewrite (after first-frame extraction), validation, one retry, rule-based fallback, cache."""

from __future__ import annotations

import io
from dataclasses import replace

from PIL import Image, UnidentifiedImageError

from movakit.enhance.backends.base import ChatBackend, Feedback
from movakit.enhance.cache import CacheKey, LRUCache
from movakit.enhance.http import BackendError
from movakit.enhance.rules import rule_rewrite
from movakit.enhance.settings import EnhancerSettings
from movakit.enhance.stage_types import EnhanceRequest, EnhanceResult
from movakit.enhance.text import normalise_quotes
from movakit.enhance.validate import clean_answer, validate_caption

LLM_ATTEMPTS = 2  # the first answer and one retry after an invalid answer


class Enhancer:
    """Rewrites prompts with `llm` (or with the rules alone when `llm` is None). Safe to share between threads."""

    def __init__(self, llm: ChatBackend | None, *, cache_size: int = 256) -> None:
        self.llm = llm
        self._cache: LRUCache[EnhanceResult] = LRUCache(cache_size)

    @property
    def backend(self) -> str:
        return "rules" if self.llm is None else self.llm.name

    def run(self, req: EnhanceRequest) -> EnhanceResult:
        _check_request(req)
        if not req.enabled:
            return EnhanceResult(
                prompt=req.prompt,
                original_prompt=req.prompt,
                backend="disabled",
                fallback_reason=None,
                events=("prompt enhancement turned off for this request; the prompt is used as given",),
            )
        rules_only = rule_rewrite(req.prompt)  # also rejects prompts whose quotes alone exceed the word limit
        if self.llm is None:
            events = list(rules_only.notes)
            if req.image is not None:
                events.append("a first frame was given but the rules backend cannot look at images")
            return EnhanceResult(
                prompt=rules_only.text,
                original_prompt=req.prompt,
                backend="rules",
                fallback_reason=None,
                events=tuple(events),
            )

        llm = self.llm
        key = CacheKey.of(llm.name, llm.model, req.prompt, req.image)
        hit = self._cache.get(key)
        if hit is not None:
            return replace(hit, cached=True, events=(*hit.events, "served from the enhancer cache"))

        events: list[str] = []
        visual = self._describe(req.image, events)
        feedback: Feedback | None = None
        reason = ""
        for attempt in range(1, LLM_ATTEMPTS + 1):
            try:
                answer = llm.rewrite(req.prompt, visual, feedback)
            except BackendError as exc:
                events.append(f"{llm.name} rewrite failed: {exc}")
                reason = f"{llm.name} backend error: {exc}"
                break
            events.extend(answer.notes)
            caption = clean_answer(answer.text)
            verdict = validate_caption(caption, req.prompt, visual_description=visual)
            if verdict.ok:
                result = EnhanceResult(
                    prompt=normalise_quotes(caption).text,  # “…”/「…」 speech marks -> "…", words unchanged
                    original_prompt=req.prompt,
                    backend=llm.name,
                    fallback_reason=None,
                    model=llm.model,
                    visual_description=visual,
                    events=tuple(events),
                )
                self._cache.put(key, result)
                return result
            events.append(f"{llm.name} answer {attempt}/{LLM_ATTEMPTS} rejected: {verdict.summary()}")
            reason = f"{llm.name} answer invalid after {attempt} attempt(s): {verdict.summary()}"
            feedback = Feedback(previous_answer=caption, problems=verdict.summary())

        fallback = rule_rewrite(req.prompt, visual)
        events.extend(fallback.notes)
        events.append(f"fell back to the rule-based rewrite ({reason})")
        return EnhanceResult(
            prompt=fallback.text,
            original_prompt=req.prompt,
            backend="rules",
            fallback_reason=reason,
            visual_description=visual,
            events=tuple(events),
        )

    def _describe(self, image: bytes | None, events: list[str]) -> str | None:
        """The first frame's visual elements from the vision model, or None (with an event saying why)."""
        if image is None:
            return None
        llm = self.llm
        if llm is None or not llm.supports_vision:
            events.append(f"a first frame was given but the {self.backend} backend has no vision model")
            return None
        try:
            answer = llm.describe_image(image)
        except BackendError as exc:
            events.append(f"first-frame description failed, rewriting without it: {exc}")
            return None
        events.extend(answer.notes)
        text = clean_answer(answer.text)
        return text or None


def build_enhancer(settings: EnhancerSettings) -> Enhancer:
    """The enhancer the settings ask for; loading a transformers model happens here, once."""
    if settings.backend == "openai":
        from movakit.enhance.backends.openai_compat import OpenAICompatBackend

        return Enhancer(OpenAICompatBackend.from_settings(settings), cache_size=settings.cache_size)
    if settings.backend == "transformers":
        from movakit.enhance.backends.transformers_lm import TransformersBackend

        llm = TransformersBackend(settings.model_path, device=settings.device, max_tokens=settings.max_tokens)
        return Enhancer(llm, cache_size=settings.cache_size)
    return Enhancer(None, cache_size=settings.cache_size)


def _check_request(req: EnhanceRequest) -> None:
    if not isinstance(req.prompt, str) or not req.prompt.strip():
        raise ValueError("prompt: must be a non-empty string")
    if req.image is not None:
        if not isinstance(req.image, bytes) or not req.image:
            raise ValueError("image: must be the non-empty bytes of an encoded image")
        try:
            with Image.open(io.BytesIO(req.image)) as im:
                im.verify()
        except (UnidentifiedImageError, OSError, SyntaxError):
            raise ValueError("image: the bytes are not a readable image") from None
