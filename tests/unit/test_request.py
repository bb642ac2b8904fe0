"""The request contract (movakit/request.py, movakit/model_rules.py): defaults, resolution, every limit with the
field named, the image and prompt rules, the proto round trip, and the rules read from a checkpoint's configs."""

from __future__ import annotations

import argparse
import io
import json
import random

import pytest
from PIL import Image

from movakit import request as r
from movakit.cli import request_options
from movakit.loading.release_configs import release_config
from movakit.model_rules import TINY_MARKER, TRAINED_SIZES, ModelRules

REAL = ModelRules(size_step=16, temporal_stride=4, audio_sample_rate=48000, audio_hop_length=960,
                  random_weights=False)
TINY = ModelRules(size_step=16, temporal_stride=4, audio_sample_rate=48000, audio_hop_length=960,
                  random_weights=True)


def resolved(rules: ModelRules = REAL, **fields) -> r.GenerationRequest:
    return r.resolve(r.GenerationRequest(**{"prompt": "a dog runs", **fields}), rules, rng=random.Random(0))


def test_defaults_follow_the_checkpoint_preset_and_draw_a_seed():
    real = r.validate(resolved(), REAL)
    assert (real.height, real.width, real.num_frames, real.fps, real.num_inference_steps, real.guidance_scale) == (
        352, 640, 193, 24.0, 50, 5.0)
    assert real.negative_prompt == r.OFFICIAL_NEGATIVE_PROMPT and real.negative_prompt.startswith("色调艳丽")
    assert real.seed == random.Random(0).randrange(2**31)
    tiny = resolved(TINY)
    assert (tiny.height, tiny.width, tiny.num_frames, tiny.num_inference_steps) == (64, 96, 17, 10)
    # an empty negative prompt is the official one too (the stack once guided against "")
    assert resolved(negative_prompt="").negative_prompt == r.OFFICIAL_NEGATIVE_PROMPT
    assert resolved(negative_prompt="blurry").negative_prompt == "blurry"
    assert resolved(seed=0).seed == 0
    assert resolved(lora_name="style").lora_scale == 1.0 and resolved().lora_scale is None


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"prompt": ""}, "prompt", "visible text"),
        ({"prompt": "\n\t "}, "prompt", "visible text"),
        ({"prompt": "\u200b\u200b"}, "prompt", "visible text"),
        ({"prompt": "\x00\x01"}, "prompt", "visible text"),
        ({"prompt": "x" * 2001}, "prompt", "2001 characters"),
        ({"negative_prompt": "x" * 2001}, "negative_prompt", "2001"),
        ({"height": 360}, "height", "not a multiple of 16"),
        ({"width": 641}, "width", "not a multiple of 16"),
        ({"height": 640, "width": 640}, "height", "352x640"),
        ({"num_frames": 192}, "num_frames", "192 is not 4k+1 (e.g. 193)"),
        ({"num_frames": 197}, "num_frames", "5..193"),
        ({"num_frames": 1}, "num_frames", "5..193"),
        ({"fps": 7.5}, "fps", "7.5 is outside 8..60"),
        ({"num_inference_steps": 101}, "num_inference_steps", "1..100"),
        ({"guidance_scale": 0.5}, "guidance_scale", "1..20"),
        ({"guidance_scale": 20.5}, "guidance_scale", "1..20"),
        ({"seed": 2**63}, "seed", "outside 0..2^63-1"),
        ({"priority": 10}, "priority", "0..9"),
        ({"lora_name": "bad name!"}, "lora.name", "A-Za-z0-9"),
        ({"lora_name": "ok", "lora_scale": 3.0}, "lora.scale", "(0, 2]"),
        ({"lora_scale": 0.5}, "lora.scale", "needs a LoRA adapter name"),
        ({"sync_guidance_scale": -0.5}, "sync_guidance_scale", "-0.5 is outside 0..20"),
        ({"sync_guidance_scale": 21.0}, "sync_guidance_scale", "0..20"),
        ({"audio_guidance_scale": 0.5}, "audio_guidance_scale", "0.5 is outside 1..20"),
        ({"audio_sync_guidance_scale": 1.0}, "audio_sync_guidance_scale", "needs sync_guidance_scale"),
        ({"sync_guidance_scale": 1.0, "audio_sync_guidance_scale": 21.0}, "audio_sync_guidance_scale", "0..20"),
        ({"shots": ("a cat sleeps",)}, "shots", "1 given; the video has 1 segment(s), so at most 0"),
        ({"duration_s": 16.0, "shots": ("a", "b")}, "shots", "2 given; the video has 2 segment(s), so at most 1"),
        ({"duration_s": 16.0, "shots": ("\u200b",)}, "shots", "shot 1: must contain visible text"),
        ({"duration_s": 16.0, "shots": ("x" * 2001,)}, "shots", "shot 1: 2001 characters"),
    ],
)
def test_each_rule_names_its_field(fields, field, fragment):
    with pytest.raises(r.InvalidArgument) as err:
        r.validate(resolved(**fields), REAL)
    assert err.value.field == field
    assert str(err.value) == f"{field}: {err.value.reason}" and fragment in err.value.reason


def test_random_weight_checkpoints_take_any_size_on_the_size_step():
    r.validate(resolved(TINY, height=32, width=48, num_frames=5), TINY)
    with pytest.raises(r.InvalidArgument, match="not supported"):
        r.validate(resolved(REAL, height=32, width=48, num_frames=5), REAL)
    with pytest.raises(r.InvalidArgument, match="^width: 1296 is outside 16..1280$"):
        r.validate(resolved(TINY, height=32, width=1296), TINY)
    coarse = ModelRules(size_step=32, temporal_stride=8, audio_sample_rate=1, audio_hop_length=1, random_weights=True)
    with pytest.raises(r.InvalidArgument, match="^height: 48 is not a multiple of 32$"):
        r.validate(resolved(coarse, height=48, width=64), coarse)
    with pytest.raises(r.InvalidArgument, match=r"^num_frames: 13 is not 8k\+1 \(e.g. 9\)$"):
        r.validate(resolved(coarse, height=64, width=64, num_frames=13), coarse)


def test_the_command_line_gets_the_same_reason_under_the_option_name():
    parser = argparse.ArgumentParser()
    request_options.add_options(parser)
    for argv, fld in ((["--steps", "0"], "num_inference_steps"), (["--fps", "100"], "fps"),
                      (["--lora-scale", "1"], "lora.scale"), (["--prompt", "\u200b"], "prompt")):
        args = parser.parse_args(["--prompt", "hi", *argv])
        with pytest.raises(r.InvalidArgument) as cli:
            request_options.from_options(args)
        fields = {"num_inference_steps": args.num_inference_steps, "fps": args.fps, "prompt": args.prompt,
                  "lora_scale": args.lora_scale}
        with pytest.raises(r.InvalidArgument) as contract:
            r.validate(resolved(**{k: v for k, v in fields.items() if v is not None}), REAL)
        assert cli.value.field == request_options.FLAGS[fld] and contract.value.field == fld
        assert cli.value.reason == contract.value.reason
    assert request_options.from_options(parser.parse_args(["--prompt", "hi", "--enhance"])).enhance_prompt is True
    dual = request_options.from_options(parser.parse_args(["--prompt", "hi", "--sync-guidance-scale", "2.5"]))
    assert dual.sync_guidance_scale == 2.5
    with pytest.raises(r.InvalidArgument, match="^--sync-guidance-scale: -1 is outside 0..20$"):
        request_options.from_options(parser.parse_args(["--prompt", "hi", "--sync-guidance-scale", "-1"]))
    shots = request_options.from_options(parser.parse_args(["--prompt", "hi", "--shot", "one", "--shot", "two"])).shots
    assert shots == ("one", "two") and request_options.from_options(parser.parse_args(["--prompt", "hi"])).shots == ()
    with pytest.raises(r.InvalidArgument, match="^--shot: shot 2: must contain visible text"):
        request_options.from_options(parser.parse_args(["--prompt", "hi", "--shot", "one", "--shot", " "]))


def test_proto_round_trip_keeps_every_field_and_unset_means_default():
    full = resolved(negative_prompt="n", height=720, width=1280, num_frames=97, fps=12.0, num_inference_steps=25,
                    guidance_scale=1.0, seed=0, enhance_prompt=True, lora_name="a.b", lora_scale=0.5, priority=3,
                    sync_guidance_scale=0.0, duration_s=20.5, audio_guidance_scale=3.0, audio_sync_guidance_scale=1.5,
                    shots=("a", "b"))
    assert r.from_proto(r.to_proto(full)) == full
    assert resolved().sync_guidance_scale is None  # unset stays unset (single text CFG): it has no default
    # the audio's scales default to the video's
    assert (resolved().audio_guidance_scale, resolved().audio_sync_guidance_scale) == (r.DEFAULT_GUIDANCE, None)
    dual = resolved(guidance_scale=4.0, sync_guidance_scale=2.0)
    assert (dual.audio_guidance_scale, dual.audio_sync_guidance_scale) == (4.0, 2.0)
    assert r.from_proto(r.to_proto(resolved())) == resolved()
    bare = r.from_proto(r.to_proto(r.GenerationRequest(prompt="p")))
    assert bare == r.GenerationRequest(prompt="p")
    with pytest.raises(ValueError, match="^negative_prompt: not resolved"):
        bare.require_resolved()


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_png_jpeg_webp_are_accepted(fmt):
    assert r.validate_image(_encode(Image.new("RGB", (64, 40), (10, 20, 30)), fmt)) == f"image/{fmt.lower()}"


def test_other_or_broken_images_are_refused():
    good = _encode(Image.new("RGB", (64, 40)), "PNG")
    for data, fragment in (
        (b"", "not a decodable PNG, JPEG or WebP image"),
        (_encode(Image.new("RGB", (8, 8)), "GIF"), "a GIF image; only PNG, JPEG or WebP"),
        (_encode(Image.new("RGB", (8, 8)), "BMP"), "a BMP image; only PNG, JPEG or WebP"),
        (good[: len(good) // 2], "not a decodable"),
        (b"\0" * (r.MAX_IMAGE_BYTES + 1), "at most"),
        (_encode(Image.new("1", (8000, 6000)), "PNG"), "pixels"),
    ):
        with pytest.raises(r.InvalidArgument) as err:
            r.validate_image(data)
        assert err.value.field == "image" and fragment in err.value.reason


def test_idempotency_key_rules():
    r.validate_idempotency_key("")
    r.validate_idempotency_key("order-42/retry_1")
    for key, fragment in (("k" * 129, "at most 128"), ("two words", "printable"), ("é", "printable")):
        with pytest.raises(r.InvalidArgument, match=fragment):
            r.validate_idempotency_key(key)


def _write_configs(root, **vae_overrides):
    for folder in ("video_vae", "video_dit", "audio_vae"):
        (root / folder).mkdir(parents=True)
        config = {**release_config(folder), **(vae_overrides if folder == "video_vae" else {})}
        (root / folder / "config.json").write_text(json.dumps(config))
    return root


def test_rules_are_read_from_the_release_configs(tmp_path):
    rules = ModelRules.from_checkpoint(_write_configs(tmp_path / "real"))
    assert rules == REAL and rules.supported_sizes == TRAINED_SIZES
    tiny = _write_configs(tmp_path / "tiny", temperal_downsample=[False, True, False])
    (tiny / TINY_MARKER).write_text("{}")
    rules = ModelRules.from_checkpoint(tiny)
    assert (rules.temporal_stride, rules.random_weights, rules.supported_sizes) == (2, True, None)
    with pytest.raises(ValueError, match="video_vae/config.json does not exist"):
        ModelRules.from_checkpoint(tmp_path)


def test_rules_match_what_the_loaded_demo_models_use():
    from movakit.loading import MovaCheckpoint
    from movakit.loading.demo import default_demo_checkpoint

    path = default_demo_checkpoint()
    rules = ModelRules.from_checkpoint(path)
    models = MovaCheckpoint(path).load(("video_vae", "audio_vae", "video_dit"))
    vae = models.video_vae
    assert rules.size_step == vae.spatial_scale * models.video_dit.config.patch_size[-1]
    assert rules.temporal_stride == vae.temporal_scale and rules.random_weights
    assert (rules.audio_sample_rate, rules.audio_hop_length) == (models.audio_vae.sample_rate,
                                                                models.audio_vae.hop_length)


def test_each_segment_gets_its_prompt_and_seed():
    from movakit.long_video import segment_request

    req = r.validate(resolved(duration_s=32.0, seed=7, shots=("shot one", "shot two")), REAL)  # 4 segments
    made = [segment_request(req, k, "enhanced") for k in range(4)]
    assert [m.prompt for m in made] == ["enhanced", "shot one", "shot two", "shot two"]  # the last shot repeats
    assert [m.seed for m in made] == [7, 8, 9, 10]
    assert all((m.duration_s, m.shots, m.enhance_prompt) == (0.0, (), False) for m in made)
    plain = r.validate(resolved(duration_s=32.0), REAL)
    assert {segment_request(plain, k, "first").prompt for k in range(4)} == {"first"}
