"""`mova generate --lora PATH --lora-scale S [--merge-lora]` on the tiny demo checkpoint: the adapter changes the
latents and merged agrees with unmerged (scale 0 == base is tested on the sampler, test_lora_math.py); bad
adapters and options are named before any denoising."""

from __future__ import annotations

import pytest
import torch
from official_writers import random_lora, write_accelerate_fsdp
from safetensors.torch import load_file

from movakit.cli import main

BASE = ["generate", "--prompt", "a bell rings twice", "--steps", "2", "--num-frames", "5", "--height", "32",
        "--width", "32", "--seed", "5"]


def _latents(tmp_path, name: str, *extra: str) -> dict[str, torch.Tensor]:
    out = tmp_path / f"{name}.mp4"
    latents = tmp_path / f"{name}.safetensors"
    assert main([*BASE, "--output", str(out), "--save-latents", str(latents), *extra]) == 0
    assert out.is_file()
    return load_file(str(latents))


def test_generate_with_an_official_adapter_unmerged_and_merged(tmp_path, meta, capsys):
    folder = str(write_accelerate_fsdp(tmp_path / "adapter", random_lora(meta, "accelerate", 4, seed=9)))
    base = _latents(tmp_path, "base")
    unmerged = _latents(tmp_path, "unmerged", "--lora", folder, "--lora-scale", "0.7")
    merged = _latents(tmp_path, "merged", "--lora", folder, "--lora-scale", "0.7", "--merge-lora")
    err = capsys.readouterr().err
    assert "note:" in err and "unmerged" in err and "merged" in err
    for key in ("video", "audio"):
        assert (unmerged[key] - base[key]).abs().max() > 1e-2
        torch.testing.assert_close(merged[key], unmerged[key], rtol=1e-4, atol=1e-4)


def test_bad_lora_options_and_adapters_are_named(tmp_path, meta, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*BASE, "--lora-scale", "0.5"])
    assert exit_info.value.code == 2 and "--lora-scale: needs a LoRA adapter name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*BASE, "--lora", str(tmp_path), "--lora-scale", "3"])
    assert "--lora-scale: 3 is outside (0, 2]" in capsys.readouterr().err
    lora = random_lora(meta, "accelerate", 2, seed=10)
    a, b = lora["audio_dit.blocks.0.ffn.0"]
    lora["audio_dit.blocks.0.ffn.0"] = (torch.zeros(2, a.shape[1] + 8), b)
    folder = write_accelerate_fsdp(tmp_path / "wrong", lora)
    with pytest.raises(SystemExit):
        main([*BASE, "--output", str(tmp_path / "x.mp4"), "--lora", str(folder)])
    err = capsys.readouterr().err
    assert "--lora: audio_dit.blocks.0.ffn.0:" in err and "another model size" in err
    assert not (tmp_path / "x.mp4").exists()
