"""The stage entry point used by `mova generate` and the prompt_enhancer service, on the default rules backend."""

import pytest
from enhance_helpers import png_bytes

from movakit.enhance.cache import CacheKey, LRUCache
from movakit.enhance.rules import PromptTooLongError
from movakit.stages.enhance import EnhanceRequest, EnhancerSettings, build_enhancer, enhance

PROMPT = "A kettle starts to boil on a gas stove."


def test_rules_backend_returns_the_used_and_original_prompt():
    result = enhance(build_enhancer(EnhancerSettings()), EnhanceRequest(PROMPT))
    assert result.original_prompt == PROMPT
    assert result.prompt.startswith(PROMPT + "\n\n") and result.prompt != PROMPT
    assert (result.backend, result.fallback_reason, result.cached) == ("rules", None, False)


def test_rules_backend_notes_that_it_cannot_see_an_image():
    result = enhance(build_enhancer(EnhancerSettings()), EnhanceRequest(PROMPT, image=png_bytes()))
    assert any("cannot look at images" in e for e in result.events)


def test_disabled_returns_the_prompt_untouched():
    prompt = "  a cat.  "
    result = enhance(build_enhancer(EnhancerSettings()), EnhanceRequest(prompt, enabled=False))
    assert result.prompt == prompt and result.backend == "disabled"


@pytest.mark.parametrize(
    ("req", "match"),
    [
        (EnhanceRequest(""), "prompt"),
        (EnhanceRequest(PROMPT, image=b""), "image"),
        (EnhanceRequest(PROMPT, image=b"GIF89a-not-really"), "image: the bytes are not a readable image"),
    ],
)
def test_bad_requests_name_the_field(req, match):
    with pytest.raises(ValueError, match=match):
        enhance(build_enhancer(EnhancerSettings()), req)


def test_speech_over_the_limit_is_refused():
    with pytest.raises(PromptTooLongError):
        enhance(build_enhancer(EnhancerSettings()), EnhanceRequest('She says "' + "la " * 300 + '"'))


def test_lru_cache_evicts_the_least_recently_used():
    cache: LRUCache[str] = LRUCache(2)
    a, b, c = (CacheKey.of("openai", "m", p, None) for p in "abc")
    cache.put(a, "A")
    cache.put(b, "B")
    assert cache.get(a) == "A"  # a is now the most recent
    cache.put(c, "C")
    assert (cache.get(a), cache.get(b), cache.get(c)) == ("A", None, "C")
    off: LRUCache[str] = LRUCache(0)
    off.put(a, "A")
    assert off.get(a) is None and len(off) == 0
    assert CacheKey.of("openai", "m", "p", b"x") != CacheKey.of("openai", "m", "p", b"y")
