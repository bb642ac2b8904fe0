"""`mova enhance` prints the prompt actually used."""

import json

import pytest
from enhance_helpers import chat_reply, image_reply, png_bytes

from movakit.cli import main
from movakit.enhance.rules import rule_rewrite

PROMPT = 'A boy kicks a ball against a wall and shouts, "¡Gol!"'

GOOD = (
    "A boy in a striped shirt kicks a ball against a brick wall in a narrow street.\n\n"
    'The ball bounces back, he traps it, kicks again and shouts, "¡Gol!"\n\n'
    "The audio features the thump of the ball on brick and his shout echoing down the street."
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("BACKEND", "BASE_URL", "MODEL", "API_KEY", "VISION_MODEL", "MODEL_PATH", "MAX_RETRIES"):
        monkeypatch.delenv(f"MOVA_ENHANCER_{name}", raising=False)
    monkeypatch.delenv("MOVA_FIRST_FRAME_BASE_URL", raising=False)


def test_default_rules_backend_prints_the_rewrite(capsys):
    assert main(["enhance", PROMPT]) == 0
    assert capsys.readouterr().out == rule_rewrite(PROMPT).text + "\n"


def test_off_prints_the_prompt_as_given(capsys):
    assert main(["enhance", PROMPT, "--off"]) == 0
    assert capsys.readouterr().out == PROMPT + "\n"


def test_openai_backend_with_image_and_json(fake_openai, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MOVA_ENHANCER_BACKEND", "openai")
    monkeypatch.setenv("MOVA_ENHANCER_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("MOVA_ENHANCER_MODEL", "tiny-chat")
    fake_openai.script(chat_reply(GOOD))
    image = tmp_path / "frame.png"
    image.write_bytes(png_bytes())
    assert main(["enhance", PROMPT, "--image", str(image), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["prompt"] == GOOD and result["backend"] == "openai" and result["original_prompt"] == PROMPT
    assert any("no vision model" in e for e in result["events"])


def test_first_frame_is_written(fake_openai, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MOVA_FIRST_FRAME_BASE_URL", fake_openai.base_url)
    fake_openai.script(image_reply(png_bytes()))
    out = tmp_path / "first.png"
    assert main(["enhance", PROMPT, "--first-frame", str(out), "--height", "96", "--width", "160"]) == 0
    assert out.read_bytes() == png_bytes()
    assert fake_openai.requests[0].body["size"] == "160x96"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["enhance", "  "], "prompt: must be a non-empty string"),
        (["enhance", "x", "--image", "/nonexistent.png"], "--image"),
        (["enhance", "x", "--backend", "openai"], "MOVA_ENHANCER_BASE_URL"),
        (["enhance", "x", "--first-frame", "out.png"], "--first-frame"),
        (["enhance", "x", "--height", "0"], "--height: must be positive"),
    ],
)
def test_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_unreadable_image_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(SystemExit) as exc:
        main(["enhance", PROMPT, "--image", str(bad)])
    assert exc.value.code == 2 and "image: the bytes are not a readable image" in capsys.readouterr().err
