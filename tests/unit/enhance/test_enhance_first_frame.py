"""First frames for text-only jobs from an OpenAI-compatible /v1/images/generations endpoint on 127.0.0.1."""

import dataclasses
import io

import pytest
from enhance_helpers import Reply, image_reply, png_bytes
from PIL import Image

from movakit.enhance.first_frame import FirstFrameError, first_frame_prompt, generate_first_frame
from movakit.enhance.settings import EnhancerSettings, FirstFrameSettings

CAPTION = "A lighthouse keeper climbs the spiral stairs.\n\nHe lights the lamp.\n\nThe audio carries wind."


def settings_for(server, **kw):
    ff = FirstFrameSettings(base_url=server.base_url, model="tiny-image", api_key="img-key", backoff_s=0.0, **kw)
    return EnhancerSettings(first_frame=ff)


def test_not_configured_keeps_the_models_fallback():
    assert generate_first_frame(EnhancerSettings(), CAPTION, 352, 640) is None


def test_image_is_generated_from_the_opening_paragraph(fake_openai):
    image = png_bytes(size=(64, 36))
    fake_openai.script(image_reply(image))
    out = generate_first_frame(settings_for(fake_openai), CAPTION, 352, 640)
    assert out == image
    assert Image.open(io.BytesIO(out)).size == (64, 36)
    [req] = fake_openai.requests
    assert req.path == "/v1/images/generations"
    assert req.body == {
        "model": "tiny-image",
        "prompt": "A lighthouse keeper climbs the spiral stairs.",
        "size": "640x352",
        "n": 1,
        "response_format": "b64_json",
    }
    assert req.headers["Authorization"] == "Bearer img-key"


def test_server_errors_are_retried_then_reported(fake_openai):
    fake_openai.script(Reply(500, {"error": "down"}))
    notes = []
    with pytest.raises(FirstFrameError, match="HTTP 500"):
        generate_first_frame(settings_for(fake_openai, max_retries=1), CAPTION, 352, 640, notes=notes)
    assert len(fake_openai.requests) == 2 and len(notes) == 1


def test_a_reply_that_is_not_an_image_is_an_error(fake_openai):
    import base64

    fake_openai.script(Reply(200, {"data": [{"b64_json": base64.b64encode(b"not a png").decode()}]}))
    with pytest.raises(FirstFrameError, match="not a readable image"):
        generate_first_frame(settings_for(fake_openai), CAPTION, 352, 640)
    fake_openai.script(Reply(200, {"data": []}))
    with pytest.raises(FirstFrameError, match=r"no data\[0\]"):
        generate_first_frame(settings_for(fake_openai), CAPTION, 352, 640)


def test_only_http_image_urls_are_downloaded(fake_openai):
    fake_openai.script(Reply(200, {"data": [{"url": "file:///etc/hostname"}]}))
    with pytest.raises(FirstFrameError, match="not an http"):
        generate_first_frame(settings_for(fake_openai), CAPTION, 352, 640)


def test_timeout_is_an_error(fake_openai):
    fake_openai.script(Reply(200, {"data": []}, delay_s=2.0))
    s = settings_for(fake_openai)
    s = dataclasses.replace(s, first_frame=dataclasses.replace(s.first_frame, timeout_s=0.3, max_retries=0))
    with pytest.raises(FirstFrameError, match="within 0.3 s"):
        generate_first_frame(s, CAPTION, 352, 640)


def test_prompt_is_the_first_paragraph():
    assert first_frame_prompt(CAPTION) == "A lighthouse keeper climbs the spiral stairs."
    with pytest.raises(ValueError, match="prompt"):
        first_frame_prompt("  ")
