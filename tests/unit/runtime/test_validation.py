"""validate_generation_params / validate_image / with_defaults: every rule, with the field named."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from movakit.api.v1 import common_pb2
from movakit.runtime import validation as v


def resolved(**overrides) -> common_pb2.GenerationParams:
    return v.with_defaults(common_pb2.GenerationParams(**{"prompt": "a dog runs", **overrides}), rng=random.Random(0))


def test_defaults_follow_the_spec_and_draw_a_seed():
    p = resolved()
    assert (p.height, p.width, p.num_frames, p.fps, p.num_inference_steps, p.guidance_scale) == (
        352, 640, 193, 24.0, 50, 5.0
    )
    assert p.HasField("seed") and p.seed == random.Random(0).randrange(0, 2**31)
    v.validate_generation_params(p)


def test_explicit_values_and_seed_zero_are_kept():
    p = resolved(height=720, width=1280, num_frames=97, fps=12, num_inference_steps=25, guidance_scale=1.0, seed=0)
    assert (p.height, p.width, p.num_frames, p.fps, p.num_inference_steps, p.guidance_scale, p.seed) == (
        720, 1280, 97, 12.0, 25, 1.0, 0
    )
    v.validate_generation_params(p)


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"prompt": ""}, "params.prompt", "empty"),
        ({"prompt": "\n\t "}, "params.prompt", "empty"),
        ({"prompt": "x" * 2001}, "params.prompt", "2001 characters"),
        ({"negative_prompt": "x" * 2001}, "params.negative_prompt", "2001"),
        ({"height": 360}, "params.height", "multiple of 16"),
        ({"width": 641}, "params.width", "multiple of 16"),
        ({"height": 640, "width": 640}, "params.height", "not supported"),
        ({"num_frames": 192}, "params.num_frames", "% 4 == 1 (e.g. 193)"),
        ({"num_frames": 197}, "params.num_frames", "5..193"),
        ({"num_frames": 1}, "params.num_frames", "5..193"),
        ({"fps": 7.5}, "params.fps", "8..60"),
        ({"num_inference_steps": 101}, "params.num_inference_steps", "1..100"),
        ({"guidance_scale": 0.5}, "params.guidance_scale", "1..20"),
        ({"guidance_scale": 20.5}, "params.guidance_scale", "1..20"),
        ({"seed": 2**63}, "params.seed", "outside"),
        ({"priority": 10}, "params.priority", "0..9"),
        ({"lora": common_pb2.LoraAdapter(name="bad name!")}, "params.lora.name", "A-Za-z0-9"),
        ({"lora": common_pb2.LoraAdapter(name="ok", scale=3)}, "params.lora.scale", "(0, 2]"),
    ],
)
def test_each_rule_names_its_field(overrides, field, fragment):
    with pytest.raises(v.InvalidArgument) as err:
        v.validate_generation_params(resolved(**overrides))
    assert err.value.field == field
    assert str(err.value).startswith(field + ": ") and fragment in str(err.value)


def test_any_size_limits_accept_small_multiples_of_16_only():
    tiny = resolved(height=32, width=48, num_frames=5)
    with pytest.raises(v.InvalidArgument):
        v.validate_generation_params(tiny)
    v.validate_generation_params(tiny, limits=v.Limits(any_size=True))
    with pytest.raises(v.InvalidArgument, match="params.width: 1296 is outside 16..1280"):
        v.validate_generation_params(resolved(height=32, width=1296), limits=v.Limits(any_size=True))


def test_plain_objects_with_the_same_attributes_validate_too():
    class Options:  # e.g. the options of `mova generate`
        prompt, negative_prompt, height, width, num_frames = "hi", "", 64, 96, 17
        fps, num_inference_steps, guidance_scale, seed, priority = 24.0, 10, 5.0, 1, 0

    v.validate_generation_params(Options(), limits=v.Limits(any_size=True), prefix="--")
    Options.num_frames = 16
    with pytest.raises(v.InvalidArgument, match="^--num_frames: "):
        v.validate_generation_params(Options(), limits=v.Limits(any_size=True), prefix="--")


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_images_are_decoded(fmt):
    data = encode(Image.new("RGB", (64, 40), (10, 20, 30)), fmt)
    assert v.validate_image(data) == (64, 40)
    assert v.image_content_type(data) == f"image/{fmt.lower()}"


def test_bad_images_are_refused():
    good = encode(Image.new("RGB", (64, 40)), "PNG")
    for data, fragment in (
        (b"", "not a decodable image"),
        (b"GIF89a garbage", "not a decodable image"),
        (good[: len(good) // 2], "not a decodable image"),
        (b"\0" * (v.MAX_IMAGE_BYTES + 1), "at most"),
        (encode(Image.new("1", (8000, 6000)), "PNG"), "pixels"),
    ):
        with pytest.raises(v.InvalidArgument) as err:
            v.validate_image(data)
        assert err.value.field == "image" and fragment in err.value.message


def test_idempotency_key_rules():
    v.validate_idempotency_key("")
    v.validate_idempotency_key("order-42/retry_1")
    for key, fragment in (("k" * 129, "at most 128"), ("two words", "printable"), ("é", "printable")):
        with pytest.raises(v.InvalidArgument, match=fragment):
            v.validate_idempotency_key(key)
