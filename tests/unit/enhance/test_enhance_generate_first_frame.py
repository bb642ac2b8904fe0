"""`mova generate` without --image draws its first frame from a configured image endpoint (MOVA_FIRST_FRAME_*),
and that frame really conditions the video: same latents as passing the same picture with --image."""

from __future__ import annotations

import pytest
import torch
from enhance_helpers import Reply, image_reply, png_bytes
from safetensors.torch import load_file

from movakit.cli import main

H, W = 32, 48
ARGS = ["--height", str(H), "--width", str(W), "--num-frames", "5", "--fps", "12", "--steps", "2"]


def _generate(tmp_path, name, *extra) -> dict[str, torch.Tensor]:
    latents = tmp_path / f"{name}.safetensors"
    rc = main(["generate", "--prompt", "A red kite rises.", *ARGS, "--output", str(tmp_path / name / "v.mp4"),
               "--save-latents", str(latents), *extra])
    assert rc == 0
    return load_file(str(latents))


@pytest.mark.slow
def test_text_only_generate_uses_the_image_endpoint(tmp_path, monkeypatch, fake_openai, capsys):
    monkeypatch.setenv("MOVA_CACHE_DIR", str(tmp_path / "cache"))
    red = png_bytes(color=(220, 20, 20), size=(W, H))
    (tmp_path / "red.png").write_bytes(red)

    white = _generate(tmp_path, "white")  # no endpoint: the spec's white frame
    explicit = _generate(tmp_path, "explicit", "--image", str(tmp_path / "red.png"))

    monkeypatch.setenv("MOVA_FIRST_FRAME_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("MOVA_FIRST_FRAME_MODEL", "tiny-image")
    fake_openai.script(image_reply(red))
    drawn = _generate(tmp_path, "drawn")

    [req] = fake_openai.requests
    assert req.path == "/v1/images/generations"
    assert req.body["size"] == f"{W}x{H}" and req.body["prompt"] == "A red kite rises."
    torch.testing.assert_close(drawn["video"], explicit["video"], rtol=0, atol=0)
    assert not torch.equal(drawn["video"], white["video"])

    # A failing endpoint falls back to the white frame and says so.
    fake_openai.script(Reply(500, {"error": "down"}))
    monkeypatch.setenv("MOVA_FIRST_FRAME_MAX_RETRIES", "0")
    capsys.readouterr()
    fallback = _generate(tmp_path, "fallback")
    torch.testing.assert_close(fallback["video"], white["video"], rtol=0, atol=0)
    assert "using the default first frame" in capsys.readouterr().err
