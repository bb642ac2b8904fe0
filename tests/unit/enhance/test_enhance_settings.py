"""Settings are read from MOVA_ENHANCER_* / MOVA_FIRST_FRAME_* once, validated, and never print keys."""

import pytest

from movakit.enhance.settings import EnhancerSettings


def test_defaults_are_the_rule_based_rewrite():
    s = EnhancerSettings.from_env({})
    assert s.backend == "rules"
    assert (s.timeout_s, s.max_retries, s.cache_size) == (60.0, 2, 256)
    assert not s.first_frame.configured


def test_openai_settings_are_read():
    env = {
        "MOVA_ENHANCER_BACKEND": "OpenAI",
        "MOVA_ENHANCER_BASE_URL": "http://127.0.0.1:8000/v1/",
        "MOVA_ENHANCER_MODEL": "qwen",
        "MOVA_ENHANCER_API_KEY": "sk-secret",
        "MOVA_ENHANCER_VISION_MODEL": "qwen-vl",
        "MOVA_ENHANCER_TIMEOUT_S": "12.5",
        "MOVA_ENHANCER_MAX_RETRIES": "4",
        "MOVA_FIRST_FRAME_BASE_URL": "http://127.0.0.1:9000/v1",
        "MOVA_FIRST_FRAME_API_KEY": "img-secret",
    }
    s = EnhancerSettings.from_env(env)
    assert (s.backend, s.base_url, s.model, s.vision_model) == ("openai", "http://127.0.0.1:8000/v1", "qwen", "qwen-vl")
    assert (s.timeout_s, s.max_retries) == (12.5, 4)
    assert s.first_frame.configured
    assert "sk-secret" not in repr(s) and "img-secret" not in repr(s)
    described = s.redacted()
    assert described["api_key"] == "***" and described["first_frame_api_key"] == "***"
    assert "sk-secret" not in str(described)


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"MOVA_ENHANCER_BACKEND": "gpt"}, "MOVA_ENHANCER_BACKEND"),
        ({"MOVA_ENHANCER_BACKEND": "openai", "MOVA_ENHANCER_MODEL": "m"}, "MOVA_ENHANCER_BASE_URL"),
        ({"MOVA_ENHANCER_BACKEND": "transformers"}, "MOVA_ENHANCER_MODEL_PATH"),
        ({"MOVA_ENHANCER_TIMEOUT_S": "soon"}, "MOVA_ENHANCER_TIMEOUT_S"),
        ({"MOVA_ENHANCER_TIMEOUT_S": "0"}, "MOVA_ENHANCER_TIMEOUT_S"),
        ({"MOVA_ENHANCER_MAX_RETRIES": "-1"}, "MOVA_ENHANCER_MAX_RETRIES"),
        ({"MOVA_ENHANCER_CACHE_SIZE": "1.5"}, "MOVA_ENHANCER_CACHE_SIZE"),
        ({"MOVA_FIRST_FRAME_TIMEOUT_S": "x"}, "MOVA_FIRST_FRAME_TIMEOUT_S"),
        ({"MOVA_FIRST_FRAME_TIMEOUT_S": "0"}, "MOVA_FIRST_FRAME_TIMEOUT_S"),
        ({"MOVA_FIRST_FRAME_MAX_RETRIES": "-1"}, "MOVA_FIRST_FRAME_MAX_RETRIES"),
    ],
)
def test_bad_values_name_the_variable(env, name):
    with pytest.raises(ValueError, match=name):
        EnhancerSettings.from_env(env)
