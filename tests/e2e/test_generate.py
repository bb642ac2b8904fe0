"""`mova generate` end to end on the tiny demo checkpoint: the newcomer's command, its MP4 checked by ffprobe
and decoded back, the WAV, the PNG and the saved latents."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from movakit.media import probe, read_audio, read_video_frames

H, W, N, FPS, STEPS = 32, 48, 9, 12.0, 3


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One MOVA_CACHE_DIR for this module: the first test creates the demo checkpoint there, the next reuses it."""
    return tmp_path_factory.mktemp("mova-cache")


@pytest.mark.slow
def test_generate_without_checkpoint_writes_a_real_mp4(tmp_path, cache_dir):
    # one thread: tiny tensors run faster without OpenMP spin contention on a busy machine
    env = dict(os.environ, MOVA_CACHE_DIR=str(cache_dir), OMP_NUM_THREADS="1")
    out = tmp_path / "out" / "clip.mp4"
    frame = tmp_path / "first.png"
    Image.new("RGB", (120, 60), (30, 160, 90)).save(frame)  # 2:1, centre-cropped to 3:2
    cmd = [
        sys.executable, "-m", "movakit", "generate",
        "--prompt", "A dog barks twice in a sunny park.",
        "--image", str(frame),
        "--height", str(H), "--width", str(W), "--num-frames", str(N), "--fps", str(FPS), "--steps", str(STEPS),
        "--output", str(out), "--save-latents", str(tmp_path / "lat.safetensors"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # the loud warning and the prompt actually used
    assert "RANDOM weights" in proc.stderr and "--checkpoint" in proc.stderr
    assert "prompt used (disabled): A dog barks twice in a sunny park." in proc.stdout
    assert f"{STEPS}/{STEPS}" in proc.stderr  # the progress bar reached the end

    # ffprobe: H.264 + AAC 48 kHz, fps, size, duration ~ N / fps (trimmed to the shorter stream)
    info = probe(out)
    assert (info.video_codec, info.pix_fmt, info.audio_codec, info.sample_rate) == ("h264", "yuv420p", "aac", 48000)
    assert (info.width, info.height, info.fps, info.num_frames) == (W, H, FPS, N)
    assert info.duration_s == pytest.approx(N / FPS, abs=0.06)

    # decoded back: every frame, a frame looked at as an image, the audio track
    frames = read_video_frames(out)
    assert frames.shape == (N, H, W, 3) and frames.dtype == np.uint8
    assert frames.std() > 1.0  # random weights give noise, not a blank frame
    png = np.asarray(Image.open(out.with_suffix(".png")).convert("RGB"))
    assert png.shape == (H, W, 3)
    assert np.abs(png.astype(int) - frames[0].astype(int)).mean() < 12  # preview = first frame (lossy codec)
    audio, sr = read_audio(out)
    assert sr == 48000 and len(audio) > 0.5 * 48000 * N / FPS

    # the WAV: 16-bit mono at the audio VAE's rate, hop x latent length samples
    lat = load_file(str(tmp_path / "lat.safetensors"))
    assert lat["video"].shape == (1, 16, (N - 1) // 4 + 1, H // 8, W // 8)
    assert lat["audio"].ndim == 3 and lat["audio"].shape[0] == 1
    with wave.open(str(out.with_suffix(".wav"))) as f:
        assert (f.getnchannels(), f.getsampwidth()) == (1, 2)
        hop = f.getframerate() // 50  # the tiny and real DACs both have a 50 Hz latent rate
        assert f.getnframes() == hop * lat["audio"].shape[-1]
    assert (cache_dir / "tiny-mova" / "model_index.json").is_file()


@pytest.mark.slow
def test_pipeline_in_process_with_the_rules_enhancer(tmp_path, cache_dir, monkeypatch):
    import torch

    from movakit.loading import MovaCheckpoint
    from movakit.loading.demo import default_demo_checkpoint
    from movakit.model_rules import ModelRules
    from movakit.pipeline import RunOptions, generate
    from movakit.request import GenerationRequest, resolve
    from movakit.stages.enhance import EnhancerSettings, build_enhancer

    monkeypatch.setenv("MOVA_CACHE_DIR", str(cache_dir))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = MovaCheckpoint(default_demo_checkpoint()).load()
        rules = ModelRules.from_checkpoint(default_demo_checkpoint())
        stages, steps = [], []
        req = resolve(GenerationRequest(prompt="a dog barks", height=32, width=48, num_frames=5, fps=8.0,
                                        num_inference_steps=2, enhance_prompt=True), rules)
        options = RunOptions(rules=rules, enhancer=build_enhancer(EnhancerSettings()), on_stage=stages.append,
                             on_step=steps.append)
        res = generate(models, req, tmp_path / "o.mp4", options, latents_path=tmp_path / "l.safetensors")
    finally:
        torch.set_num_threads(threads)
    assert stages == ["enhance", "encode", "denoise", "decode", "write"]
    assert [s.step for s in steps] == [1, 2] and [s.expert for s in steps] == ["video_dit", "video_dit_2"]
    assert res.enhance_backend == "rules" and res.prompt_used != "a dog barks" and "dog" in res.prompt_used
    saved = load_file(str(tmp_path / "l.safetensors"))
    assert torch.equal(saved["video"], res.latents.video_latents) and torch.equal(saved["audio"], res.latents.audio_latents)
    assert (res.mp4, res.wav, res.png) == (tmp_path / "o.mp4", tmp_path / "o.wav", tmp_path / "o.png")
    assert probe(res.mp4).num_frames == 5
