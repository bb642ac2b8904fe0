"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1 that speaks /v1/chat/completions."""

import base64

import pytest
from enhance_helpers import Reply, chat_reply, png_bytes

from movakit.enhance.backends.openai_compat import OpenAICompatBackend
from movakit.enhance.enhancer import Enhancer, build_enhancer
from movakit.enhance.http import RetryPolicy
from movakit.enhance.rules import rule_rewrite
from movakit.enhance.settings import EnhancerSettings
from movakit.enhance.stage_types import EnhanceRequest
from movakit.enhance.text import normalise_quotes
from movakit.stages.enhance import enhance

PROMPT = 'Two kids race paper boats down a rain gutter. The girl yells, "Mine is winning!"'
GOOD = (
    "Two kids crouch beside a rain gutter, each setting a folded paper boat on the running water.\n\n"
    'The boats spin and race along the gutter as the kids run beside them, and the girl yells, "Mine is winning!"\n\n'
    "The audio features rushing gutter water, splashing footsteps and the girl's excited shout."
)
INVALID = "Two kids play with boats in the rain and the girl shouts that she is winning."


def make_enhancer(server, *, max_retries=0, timeout_s=5.0, vision_model="", cache_size=16, sleeps=None):
    backend = OpenAICompatBackend(
        base_url=server.base_url,
        model="tiny-chat",
        api_key="sk-test",
        vision_model=vision_model,
        policy=RetryPolicy(timeout_s=timeout_s, max_retries=max_retries, backoff_s=0.25),
        sleep=(sleeps.append if sleeps is not None else None),
    )
    return Enhancer(backend, cache_size=cache_size)


def test_good_answer_is_used_and_the_request_speaks_the_protocol(fake_openai):
    fake_openai.script(chat_reply(GOOD))
    result = enhance(make_enhancer(fake_openai), EnhanceRequest(PROMPT))
    assert result.prompt == GOOD
    assert (result.backend, result.model, result.fallback_reason) == ("openai", "tiny-chat", None)
    assert result.original_prompt == PROMPT
    [req] = fake_openai.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["Authorization"] == "Bearer sk-test"
    assert req.body["model"] == "tiny-chat"
    assert [m["role"] for m in req.body["messages"]] == ["system", "user"]
    assert PROMPT in req.body["messages"][1]["content"]
    assert req.body["messages"][1]["content"].endswith('in straight double quotes: "Mine is winning!"')


def test_invalid_answer_is_retried_once_with_the_problems(fake_openai):
    fake_openai.script(chat_reply(INVALID), chat_reply(GOOD))
    result = enhance(make_enhancer(fake_openai), EnhanceRequest(PROMPT))
    assert result.prompt == GOOD and result.backend == "openai"
    assert len(fake_openai.requests) == 2
    retry = fake_openai.requests[1].body["messages"]
    assert [m["role"] for m in retry] == ["system", "user", "assistant", "user"]
    assert retry[2]["content"] == INVALID
    assert "no_audio_paragraph" in retry[3]["content"] and "missing_quote" in retry[3]["content"]
    assert any("answer 1/2 rejected" in e for e in result.events)


def test_invalid_answer_twice_falls_back_to_rules_and_records_it(fake_openai):
    fake_openai.script(chat_reply(INVALID))
    result = enhance(make_enhancer(fake_openai), EnhanceRequest(PROMPT))
    assert len(fake_openai.requests) == 2
    assert result.prompt == rule_rewrite(PROMPT).text
    assert result.backend == "rules"
    assert result.fallback_reason is not None and "invalid" in result.fallback_reason
    assert any(e.startswith("fell back to the rule-based rewrite") for e in result.events)
    assert [q.content for q in normalise_quotes(result.prompt).quotes] == ["Mine is winning!"]


def test_timeout_falls_back(fake_openai):
    fake_openai.script(Reply(200, {"choices": []}, delay_s=2.0))
    result = enhance(make_enhancer(fake_openai, timeout_s=0.3), EnhanceRequest(PROMPT))
    assert result.backend == "rules"
    assert "within 0.3 s" in result.fallback_reason
    assert len(fake_openai.requests) == 1


def test_500s_are_retried_with_backoff_then_succeed(fake_openai):
    sleeps = []
    fake_openai.script(Reply(500, {"error": "overloaded"}), Reply(503, {"error": "busy"}), chat_reply(GOOD))
    result = enhance(make_enhancer(fake_openai, max_retries=2, sleeps=sleeps), EnhanceRequest(PROMPT))
    assert result.prompt == GOOD
    assert sleeps == [0.25, 0.5]
    assert len(fake_openai.requests) == 3
    assert sum("HTTP 500" in e or "HTTP 503" in e for e in result.events) == 2


def test_persistent_500s_fall_back_after_the_retries(fake_openai):
    sleeps = []
    fake_openai.script(Reply(500, {"error": "down"}))
    result = enhance(make_enhancer(fake_openai, max_retries=1, sleeps=sleeps), EnhanceRequest(PROMPT))
    assert result.backend == "rules"
    assert "HTTP 500" in result.fallback_reason and "2 attempt(s)" in result.fallback_reason
    assert len(fake_openai.requests) == 2 and sleeps == [0.25]


def test_client_errors_are_not_retried(fake_openai):
    fake_openai.script(Reply(401, {"error": "bad key"}))
    result = enhance(make_enhancer(fake_openai, max_retries=3, sleeps=[]), EnhanceRequest(PROMPT))
    assert result.backend == "rules" and "HTTP 401" in result.fallback_reason
    assert len(fake_openai.requests) == 1


def test_unreachable_server_falls_back():
    settings = EnhancerSettings(
        backend="openai", base_url="http://127.0.0.1:9/v1", model="m", max_retries=0, timeout_s=2
    )
    result = enhance(build_enhancer(settings), EnhanceRequest(PROMPT))
    assert result.backend == "rules" and "cannot reach" in result.fallback_reason


def test_image_is_described_by_the_vision_model_and_fed_to_the_rewrite(fake_openai):
    image = png_bytes()
    visual = 'Style: bright photo.\nCamera: low angle.\nElements: two kids by a gutter.\nText: "SLOW"'
    answer = GOOD.replace("Two kids crouch", 'Under a "SLOW" sign, two kids crouch')
    fake_openai.script(chat_reply(visual), chat_reply(answer))
    result = enhance(make_enhancer(fake_openai, vision_model="tiny-vl"), EnhanceRequest(PROMPT, image=image))
    assert result.prompt == answer  # "SLOW" is allowed: it is on-screen text from the description
    assert result.visual_description == visual
    describe, rewrite = fake_openai.requests
    assert describe.body["model"] == "tiny-vl"
    parts = describe.body["messages"][0]["content"]
    url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
    assert url == "data:image/png;base64," + base64.b64encode(image).decode("ascii")
    assert rewrite.body["model"] == "tiny-chat"
    assert visual in rewrite.body["messages"][1]["content"]


def test_image_without_vision_model_is_recorded(fake_openai):
    fake_openai.script(chat_reply(GOOD))
    result = enhance(make_enhancer(fake_openai), EnhanceRequest(PROMPT, image=png_bytes()))
    assert result.prompt == GOOD and result.visual_description is None
    assert any("no vision model" in e for e in result.events)
    assert len(fake_openai.requests) == 1


def test_cache_is_keyed_by_prompt_and_image(fake_openai):
    fake_openai.script(chat_reply(GOOD))
    enhancer = make_enhancer(fake_openai)
    first = enhance(enhancer, EnhanceRequest(PROMPT))
    again = enhance(enhancer, EnhanceRequest(PROMPT))
    assert again.cached and again.prompt == first.prompt
    assert len(fake_openai.requests) == 1
    enhance(enhancer, EnhanceRequest(PROMPT, image=png_bytes()))
    enhance(enhancer, EnhanceRequest(PROMPT, image=png_bytes(color=(0, 0, 255))))
    assert len(fake_openai.requests) == 3


def test_fallbacks_are_not_cached(fake_openai):
    fake_openai.script(Reply(500, {"error": "down"}), Reply(500, {"error": "down"}), chat_reply(GOOD))
    enhancer = make_enhancer(fake_openai)
    assert enhance(enhancer, EnhanceRequest(PROMPT)).backend == "rules"
    assert enhance(enhancer, EnhanceRequest(PROMPT)).backend == "rules"
    result = enhance(enhancer, EnhanceRequest(PROMPT))
    assert result.backend == "openai" and not result.cached


def test_disabled_request_skips_the_backend(fake_openai):
    fake_openai.script(chat_reply(GOOD))
    result = enhance(make_enhancer(fake_openai), EnhanceRequest(PROMPT, enabled=False))
    assert result.prompt == PROMPT and result.backend == "disabled"
    assert fake_openai.requests == []


@pytest.mark.parametrize("content", [[{"type": "text", "text": GOOD}], GOOD])
def test_content_as_string_or_parts(fake_openai, content):
    fake_openai.script(Reply(200, {"choices": [{"message": {"role": "assistant", "content": content}}]}))
    assert enhance(make_enhancer(fake_openai), EnhanceRequest(PROMPT)).prompt == GOOD


def test_malformed_reply_falls_back(fake_openai):
    fake_openai.script(Reply(200, b"<html>gateway</html>"))
    result = enhance(make_enhancer(fake_openai, max_retries=2, sleeps=[]), EnhanceRequest(PROMPT))
    assert result.backend == "rules" and "not JSON" in result.fallback_reason


def test_accepted_answer_has_its_speech_marks_normalised(fake_openai):
    fake_openai.script(chat_reply(GOOD.replace('"Mine is winning!"', "\u201cMine is winning!\u201d")))
    assert enhance(make_enhancer(fake_openai), EnhanceRequest(PROMPT)).prompt == GOOD
