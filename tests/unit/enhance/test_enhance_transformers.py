"""The local transformers backend on a tiny randomly initialised Llama: its gibberish must be caught."""

import pytest
from enhance_helpers import png_bytes

from movakit.enhance.backends.transformers_lm import TransformersBackend
from movakit.enhance.enhancer import build_enhancer
from movakit.enhance.http import BackendError
from movakit.enhance.rules import rule_rewrite
from movakit.enhance.settings import EnhancerSettings
from movakit.enhance.stage_types import EnhanceRequest
from movakit.enhance.validate import clean_answer, validate_caption
from movakit.stages.enhance import enhance

PROMPT = 'An old sailor mends a net on the dock and mutters, "Der Wind dreht sich."'


@pytest.fixture(scope="module")
def tiny_enhancer(tiny_lm_dir):
    return build_enhancer(EnhancerSettings(backend="transformers", model_path=str(tiny_lm_dir), max_tokens=8))


def test_tiny_model_generates_deterministic_text_that_the_validator_rejects(tiny_enhancer):
    backend = tiny_enhancer.llm
    assert isinstance(backend, TransformersBackend)
    first = backend.rewrite(PROMPT, None).text
    assert first.strip()  # the model really produced tokens
    assert backend.rewrite(PROMPT, None).text == first  # greedy decoding
    verdict = validate_caption(clean_answer(first), PROMPT)
    assert "missing_quote" in [i.code for i in verdict.issues]


def test_gibberish_twice_falls_back_to_the_rules(tiny_enhancer):
    result = enhance(tiny_enhancer, EnhanceRequest(PROMPT, image=png_bytes()))
    assert result.backend == "rules"
    assert result.prompt == rule_rewrite(PROMPT).text
    assert result.fallback_reason.startswith("transformers answer invalid after 2 attempt(s)")
    assert sum("rejected" in e for e in result.events) == 2
    assert result.visual_description is None  # text-only model: the image is noted, not described
    assert any("no vision model" in e for e in result.events)


def test_text_only_model_refuses_to_describe_images(tiny_enhancer):
    assert tiny_enhancer.llm.supports_vision is False
    with pytest.raises(BackendError, match="text-only"):
        tiny_enhancer.llm.describe_image(png_bytes())


def test_prompt_longer_than_the_model_context_is_a_backend_error(tiny_lm_dir):
    backend = TransformersBackend(tiny_lm_dir, max_tokens=4000)
    with pytest.raises(BackendError, match="exceeds the model's 2048 positions"):
        backend.rewrite(PROMPT, None)


def test_missing_model_folder_names_the_setting(tmp_path):
    with pytest.raises(ValueError, match="MOVA_ENHANCER_MODEL_PATH"):
        TransformersBackend(tmp_path / "nope")
