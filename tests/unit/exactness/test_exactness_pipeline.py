"""`mova generate` end to end against the re-stated official `MOVA.__call__` (tests/reference/pipeline_reference.py).

One tiny checkpoint (float32, CPU) per module. Compared: the encode stage's output (context, negative_context, y),
the initial noise, the final latents as `mova generate --save-latents` writes them, the decoded frames (uint8) and
waveform, and the WAV / MP4 the CLI writes. Sizes: 64x96, 9 frames; 5 steps with guidance 5 (expert switch at
step 2) and 3 steps with guidance 1 (switch at step 2).
"""

from __future__ import annotations

import wave

import numpy as np
import pipeline_reference as pr
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

H, W, N, FPS = 64, 96, 9, 24.0
PROMPT = "A  cat says &amp;quot;hello&amp;quot; to the   camera."
NEGATIVE = "blurry, static"


def _pattern(h: int, w: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(x / 5.0), np.cos(y / 4.0), np.sin((x + y) / 7.0)], -1)
    return Image.fromarray(np.clip((base + rng.normal(0, 0.3, (h, w, 3)) + 1.5) * 80, 0, 255).astype(np.uint8))


IMAGES = {
    "text_only": None,  # movakit's first-frame source; the official workflow feeds a white frame
    "same_size": _pattern(H, W, 1),
    "crop_resize": _pattern(150, 130, 2),  # too tall: rows cropped, then bicubic resize
}


def _official_image(name: str) -> Image.Image:
    image = IMAGES[name]
    return Image.new("RGB", (W, H), (255, 255, 255)) if image is None else image


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from movakit.loading.demo import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=3)


@pytest.fixture(scope="module")
def ref_models(checkpoint):
    return pr.load_reference_models(checkpoint)


@pytest.fixture(scope="module")
def mova_models(checkpoint):
    from movakit.loading import MovaCheckpoint

    return MovaCheckpoint(checkpoint).load(device="cpu", dtype=torch.float32)


_REF_CACHE: dict = {}


def _reference(ref_models, image: str, steps: int, guidance: float, seed: int = 11,
               fps: float = FPS) -> pr.ReferenceOutput:
    key = (id(ref_models), image, steps, guidance, seed, fps)
    if key not in _REF_CACHE:
        torch.set_num_threads(1)
        _REF_CACHE[key] = pr.reference_call(
            ref_models, prompt=PROMPT, image=_official_image(image), negative_prompt=NEGATIVE, seed=seed,
            height=H, width=W, num_frames=N, video_fps=fps, num_inference_steps=steps, cfg_scale=guidance,
        )
    return _REF_CACHE[key]


def _rel(got: torch.Tensor, expect: torch.Tensor) -> float:
    got, expect = got.double(), expect.double()
    return ((got - expect).abs().max() / expect.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("image", list(IMAGES))
def test_encode_stage_is_bit_exact(ref_models, mova_models, image):
    from movakit.stages.encode import EncodeRequest, encode

    with torch.no_grad():
        condition = pr.prepare_condition(ref_models, pr.preprocess_image(_official_image(image), H, W), N, H, W)
    got = encode(mova_models, EncodeRequest(PROMPT, NEGATIVE, IMAGES[image], H, W, N))
    assert torch.equal(got.context, pr.t5_prompt_embeds(ref_models, PROMPT)), "context"
    assert torch.equal(got.negative_context, pr.t5_prompt_embeds(ref_models, NEGATIVE)), "negative_context"
    # padding positions are zero, the prompt positions are not
    assert got.context[0, -1].abs().max() == 0 and got.context[0, 0].abs().max() > 0
    assert got.y.shape == condition.shape == (1, 20, 3, H // 8, W // 8)
    assert torch.equal(got.y, condition), f"y: max abs diff {(got.y - condition).abs().max():.3e}"


def test_initial_noise_and_audio_length_are_bit_exact(ref_models, mova_models):
    from movakit.stages.denoise import audio_latent_length, initial_noise

    ref = _reference(ref_models, "same_size", steps=3, guidance=1.0)
    dac = mova_models.audio_vae
    length = audio_latent_length(dac.sample_rate, dac.hop_length, N, FPS)
    assert ref.audio_num_samples == 18000 and length == 19 == ref.audio_noise.shape[-1]
    video, audio = initial_noise(11, tuple(ref.video_noise.shape), (1, dac.latent_dim, length))
    assert torch.equal(video, ref.video_noise)
    assert torch.equal(audio, ref.audio_noise)


def _run_cli(tmp_path, checkpoint, image: str, steps: int, guidance: float, *extra: str, fps: float = FPS):
    from movakit.cli import main

    argv = ["generate", "--prompt", PROMPT, "--negative-prompt", NEGATIVE, "--checkpoint", str(checkpoint),
            "--device", "cpu", "--dtype", "float32", "--height", str(H), "--width", str(W), "--num-frames", str(N),
            "--fps", str(fps), "--steps", str(steps), "--guidance-scale", str(guidance), "--seed", "11",
            "--output", str(tmp_path / "out.mp4"), "--save-latents", str(tmp_path / "lat.safetensors"), *extra]
    if IMAGES[image] is not None:
        IMAGES[image].save(tmp_path / "first.png")
        argv += ["--image", str(tmp_path / "first.png")]
    torch.set_num_threads(1)
    assert main(argv) == 0
    return load_file(str(tmp_path / "lat.safetensors"))


@pytest.mark.parametrize(
    ("image", "steps", "guidance", "extra", "rel"),
    [
        # B=2 CFG batch (the CUDA default): rounding of the batched kernels only (6e-7 measured)
        ("crop_resize", 5, 5.0, ("--cfg-batch",), 1e-5),
        # two B=1 forwards, as the official loop (the CPU default): the same arithmetic
        ("text_only", 5, 5.0, (), 0.0),
        ("same_size", 3, 1.0, (), 0.0),
    ],
)
def test_cli_saved_latents_match_reference(tmp_path, checkpoint, ref_models, image, steps, guidance, extra, rel):
    ref = _reference(ref_models, image, steps, guidance)
    assert ref.experts == [0, 0, 1, 1, 1][:steps], "the step count must cross the expert switch"
    saved = _run_cli(tmp_path, checkpoint, image, steps, guidance, *extra)
    assert set(saved) == {"video", "audio"}
    # `video`: the normalised latent as the loop ends it (before de-normalisation); `audio`: raw DAC latent
    assert saved["video"].dtype == saved["audio"].dtype == torch.float32
    assert saved["video"].shape == ref.video_latents.shape and saved["audio"].shape == ref.audio_latents.shape
    assert _rel(saved["video"], ref.video_latents) <= rel, f"video latents rel {_rel(saved['video'], ref.video_latents):.2e}"
    assert _rel(saved["audio"], ref.audio_latents) <= rel, f"audio latents rel {_rel(saved['audio'], ref.audio_latents):.2e}"
    # not the de-normalised latent (what the VAE decodes)
    cfg = ref_models.video_vae.config
    mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)
    assert _rel(saved["video"], ref.video_latents * std + mean) > 0.1


def test_decode_stage_matches_reference_frames_and_waveform(ref_models, mova_models):
    from movakit.stages.decode import DecodeRequest, decode

    ref = _reference(ref_models, "crop_resize", 5, 5.0)
    got = decode(mova_models, DecodeRequest(ref.video_latents, ref.audio_latents, fps=FPS))
    assert got.frames.dtype == np.uint8 and got.frames.shape == ref.frames.shape == (N, H, W, 3)
    assert np.array_equal(got.frames, ref.frames), f"frames differ at {np.argwhere(got.frames != ref.frames)[:5]}"
    assert got.sample_rate == 48000
    # both keep the whole DAC output: hop * L = 960 * 19 = 18240 samples (int(48000*9/24) = 18000 is not cut)
    assert got.audio.shape == ref.audio.shape == (18240,)
    assert np.array_equal(got.audio, ref.audio), f"waveform max abs diff {np.abs(got.audio - ref.audio).max():.3e}"


def test_written_wav_and_mp4_follow_the_official_save_path(tmp_path, mova_models, ref_models):
    from movakit.media import probe, write_outputs
    from movakit.stages.decode import DecodeRequest, decode

    ref = _reference(ref_models, "crop_resize", 5, 5.0)
    clip = decode(mova_models, DecodeRequest(ref.video_latents, ref.audio_latents, fps=FPS))
    # a waveform that exceeds [-1, 1] exercises the clip; the DAC output itself is tanh-bounded
    loud = clip.audio.copy()
    loud[:4] = [1.5, -1.5, 0.99999, -0.3]
    clip = type(clip)(frames=clip.frames, audio=loud, sample_rate=clip.sample_rate, fps=clip.fps)
    mp4, wav_path, png = write_outputs(clip, tmp_path / "o.mp4")
    with wave.open(str(wav_path)) as f:
        assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, 48000)
        pcm = np.frombuffer(f.readframes(f.getnframes()), np.int16)
    assert np.array_equal(pcm, pr.official_wav_pcm(loud))
    assert pcm[:4].tolist() == [32767, -32767, 32766, -9830]
    assert np.array_equal(np.asarray(Image.open(png)), ref.frames[0])
    info = probe(mp4)
    assert (info.audio_codec, info.sample_rate, info.audio_channels) == ("aac", 48000, 1)
    assert info.num_frames == N and info.video_codec == "h264"
    # -shortest: 9 frames at 24 fps = 0.375 s of video vs 18240 / 48000 = 0.38 s of audio
    assert info.duration_s == pytest.approx(N / FPS, abs=0.03)


@pytest.mark.parametrize(
    "prompt",
    [
        " ".join(f"word{i} 猫" for i in range(400)),  # > 512 tokens: truncated, </s> kept last
        "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
        "JPEG压缩残留，丑陋的，残缺的，多余的手指",  # the official negative prompt (byte fallback in the tiny vocab)
        "tab\tnew\nline  &amp;lt;b&amp;gt; cafe\u0301 \ufb01",  # whitespace, double-escaped HTML, ftfy
        "",  # the official __call__'s default negative prompt
    ],
    ids=["long", "official_negative", "cleaning", "empty"],
)
def test_text_encoder_matches_official_prompt_embeds(ref_models, mova_models, prompt):
    ids, mask = mova_models.text_encoder.tokenize([prompt])
    expect_ids = ref_models.tokenizer.encode(pr.prompt_clean(prompt)).ids
    assert ids[0].tolist() == expect_ids
    n = int(mask.sum())
    assert ids[0, n - 1].item() == 1, "the last real token is </s>"
    got = mova_models.text_encoder.encode([prompt])
    assert torch.equal(got, pr.t5_prompt_embeds(ref_models, prompt))
    assert got[0, n:].abs().max() == 0 if n < 512 else n == 512


# int(fps) or round(fps) anywhere would change the audio length (int: 18782 samples, L = 20) or the bridge's
# time alignment (round), and so the latents
@pytest.mark.parametrize(("fps", "audio_len"), [(23.976, 19)])
def test_cli_other_fps_sets_audio_length_and_bridge_alignment_as_official(tmp_path, checkpoint, ref_models, fps,
                                                                          audio_len):
    ref = _reference(ref_models, "same_size", 3, 1.0, fps=fps)
    assert ref.audio_latents.shape[-1] == audio_len  # (int(48000 * 9 / fps) - 1) // 960 + 1
    saved = _run_cli(tmp_path, checkpoint, "same_size", 3, 1.0, fps=fps)
    assert torch.equal(saved["video"], ref.video_latents)
    assert torch.equal(saved["audio"], ref.audio_latents)
