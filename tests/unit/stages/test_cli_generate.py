"""`mova generate` option validation: every bad option exits 2 with a message naming it, before any model work."""

from __future__ import annotations

import argparse

import pytest
from PIL import Image

from movakit.cli import UsageError, build_parser, main
from movakit.cli.generate import validate
from movakit.request import GENERATE_SEED


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["generate", "--prompt", "a dog barks", *argv])


@pytest.mark.parametrize(
    "argv,option",
    [
        (["--height", "2000"], "--height"),
        (["--width", "0"], "--width"),
        (["--num-frames", "3"], "--num-frames"),
        (["--fps", "0"], "--fps"),
        (["--steps", "0"], "--steps"),
        (["--guidance-scale", "-1"], "--guidance-scale"),
        (["--seed", "-3"], "--seed"),
        (["--priority", "10"], "--priority"),
        (["--lora", "bad name!"], "--lora"),
        (["--merge-lora"], "--merge-lora"),
        (["--device", "tpu"], "--device"),
        (["--device", "cuda:7"], "--device"),
        (["--output", "clip.avi"], "--output"),
        (["--save-latents", "lat.pt"], "--save-latents"),
        (["--image", "/nonexistent/frame.png"], "--image"),
        (["--checkpoint", "/nonexistent/mova"], "--checkpoint"),
        (["--offload", "--device", "cpu"], "--offload"),
    ],
)
def test_bad_option_exits_2_naming_it_before_any_model_work(argv, option, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MOVA_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--prompt", "a dog barks", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"mova: error: {option}:" in err
    assert not (tmp_path / "cache").exists()  # the demo checkpoint was not even created


def test_empty_prompt_and_unreadable_image(tmp_path):
    for prompt in ("  ", "\u200b\u200b", "\x00\x01"):
        with pytest.raises(UsageError, match="^--prompt: must contain visible text"):
            validate(build_parser().parse_args(["generate", "--prompt", prompt]), cuda_count=0)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(UsageError, match="^--image: not a decodable PNG, JPEG or WebP image"):
        validate(_parse("--image", str(junk)), cuda_count=0)
    gif = tmp_path / "frame.gif"
    Image.new("RGB", (8, 8)).save(gif)
    with pytest.raises(UsageError, match="^--image: a GIF image; only PNG, JPEG or WebP are accepted"):
        validate(_parse("--image", str(gif)), cuda_count=0)


def test_defaults(tmp_path):
    img = tmp_path / "f.png"
    Image.new("RGB", (8, 8)).save(img)
    opts = validate(_parse("--image", str(img)), cuda_count=0)
    req = opts.request
    assert req.seed == GENERATE_SEED == 42  # the same output every run; the other defaults: resolved per checkpoint
    assert req.negative_prompt is None and req.height is None and req.num_inference_steps is None
    assert (opts.device, opts.dtype) == ("cpu", "float32")
    # CFG batching: off on the CPU (bit-identical to the official two forwards), on for CUDA (faster)
    assert req.enhance_prompt is False and opts.cfg_batch is False and opts.offload is False
    gpu = validate(_parse(), cuda_count=1)
    assert (gpu.device, gpu.dtype, gpu.cfg_batch) == ("cuda", "bfloat16", True)
    assert validate(_parse("--cfg-batch"), cuda_count=0).cfg_batch is True
    assert validate(_parse("--no-cfg-batch"), cuda_count=1).cfg_batch is False
    assert validate(_parse("--device", "cuda:0", "--dtype", "float32"), cuda_count=1).dtype == "float32"
    assert validate(_parse("--enhance", "--no-cfg-batch"), cuda_count=0).request.enhance_prompt is True


def test_dtype_choices_are_enforced_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--prompt", "x", "--dtype", "float16"])
    assert exc.value.code == 2 and "--dtype" in capsys.readouterr().err


def test_bad_enhancer_variable_exits_2_naming_it_before_any_model_work(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MOVA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MOVA_FIRST_FRAME_MAX_RETRIES", "-1")
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--prompt", "a dog barks"])
    assert exc.value.code == 2
    assert "mova: error: MOVA_FIRST_FRAME_MAX_RETRIES:" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_checkpoint_that_cannot_load_exits_2_naming_what_is_missing(capsys, tmp_path):
    (tmp_path / "model_index.json").write_text('{"_class_name": "MOVA"}')  # lists no component
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--prompt", "a dog barks", "--checkpoint", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "mova: error: --checkpoint:" in err and "video_vae/config.json does not exist" in err


def test_checkpoint_rules_are_checked_after_the_checkpoint_is_read(capsys):
    for argv, said in ((["--height", "100"], "--height: 100 is not a multiple of 16"),
                       (["--num-frames", "16"], "--num-frames: 16 is not 4k+1 (e.g. 17)")):
        with pytest.raises(SystemExit) as exc:
            main(["generate", "--prompt", "a dog barks", *argv])
        assert exc.value.code == 2
        assert f"mova: error: {said}" in capsys.readouterr().err


def test_registering_generate_and_enhance_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, argparse, movakit.cli.generate as g, movakit.cli.enhance as e; "
            "sub = argparse.ArgumentParser().add_subparsers(); g.register(sub); e.register(sub); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # torch costs ~1.7 s on every mova command
