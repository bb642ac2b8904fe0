"""umT5 text encoder: prompt cleaning, 512-token layout, mask passed to the encoder, pad zeroing, release keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from movakit.models.text_encoder import MAX_LENGTH, TextEncoder, clean_prompt
from movakit.testing.keys import key_listing, release_module_on_meta
from movakit.loading.components import load_text_encoder
from movakit.loading.demo import write_tiny_checkpoint

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "keys" / "text_encoder.txt"
# umT5-XXL parameter count from the released text_encoder/model.safetensors.index.json (docs/model.md#components).
RELEASE_PARAMS = 5_680_910_336


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> TextEncoder:
    ck = write_tiny_checkpoint(tmp_path_factory.mktemp("te") / "tiny")
    return load_text_encoder(ck / "text_encoder", ck / "tokenizer")


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("  a   cat\n\tsits  ", "a cat sits"),
        ("rock &amp;amp; roll", "rock & roll"),  # unescaped twice
        ("&lt;b&gt; bold", "<b> bold"),
        ("the dogâ€™s bark", "the dog's bark"),  # ftfy repairs mojibake
        ("", ""),
    ],
)
def test_clean_prompt(raw, clean):
    assert clean_prompt(raw) == clean


def test_tokenize_layout(encoder):
    ids, mask = encoder.tokenize(["a cat", "the dog runs near the sea"])
    assert ids.shape == mask.shape == (2, MAX_LENGTH)
    lengths = mask.sum(dim=1)
    eos, pad = encoder.tokenizer.eos_token_id, encoder.tokenizer.pad_token_id
    for row, n in zip(ids, lengths):
        assert row[n - 1] == eos and torch.all(row[n:] == pad)  # special token appended, right padding
    assert lengths[1] > lengths[0]


def test_cleaning_happens_before_tokenizing(encoder):
    a, _ = encoder.tokenize(["rock &amp;amp;   roll"])
    b, _ = encoder.tokenize(["rock & roll"])
    assert torch.equal(a, b)


def test_encode_zeroes_every_position_past_the_prompt(encoder):
    ctx = encoder.encode(["a cat walks", "the sea"])
    _, mask = encoder.tokenize(["a cat walks", "the sea"])
    assert ctx.shape == (2, MAX_LENGTH, 32) and ctx.dtype == torch.float32
    for row, n in zip(ctx, mask.sum(dim=1)):
        assert torch.all(row[n:] == 0)
        assert torch.all(row[:n].abs().sum(dim=-1) > 0)


def test_encoder_gets_the_attention_mask_like_the_official_pipeline(encoder):
    prompt = ["a dog barks"]
    ids, mask = encoder.tokenize(prompt)
    n = int(mask.sum())
    with torch.no_grad():
        with_mask = encoder.model(input_ids=ids, attention_mask=mask).last_hidden_state
        without = encoder.model(input_ids=ids).last_hidden_state
    ctx = encoder.encode(prompt)
    assert torch.allclose(ctx[0, :n], with_mask[0, :n], atol=1e-6)
    assert not torch.allclose(with_mask[0, :n], without[0, :n], atol=1e-4)  # the mask does change the result


def test_batch_rows_equal_single_prompts(encoder):
    both = encoder.encode(["a cat", "a dog runs in the rain"])
    assert torch.allclose(both[0], encoder.encode(["a cat"])[0], atol=1e-6)
    assert torch.allclose(both[1], encoder.encode(["a dog runs in the rain"])[0], atol=1e-6)


def test_long_prompts_are_truncated_to_512_with_eos(encoder):
    ids, mask = encoder.tokenize(["cat " * 1000])
    assert int(mask.sum()) == MAX_LENGTH and ids[0, -1] == encoder.tokenizer.eos_token_id
    assert torch.all(encoder.encode(["cat " * 1000]).abs().sum(dim=-1) > 0)


def test_empty_prompt_keeps_only_the_eos_position(encoder):
    ctx = encoder.encode([""])
    assert torch.all(ctx[0, 0] != 0) and torch.all(ctx[0, 1:] == 0)


def test_bad_arguments(encoder):
    with pytest.raises(TypeError, match="prompts"):
        encoder.encode("a cat")
    with pytest.raises(ValueError, match="prompts"):
        encoder.encode([])


def test_release_key_listing_and_parameter_count():
    module = release_module_on_meta("text_encoder")
    lines = FIXTURE.read_text().splitlines()
    assert key_listing(module) == lines
    assert sum(p.numel() for p in module.parameters()) == RELEASE_PARAMS  # tied embedding counted once
    assert lines[0] == "shared.weight\t[256384, 4096]"
    assert "encoder.embed_tokens.weight" not in FIXTURE.read_text()  # stored once, under shared.weight


def test_tokenizer_json_is_loaded_verbatim_with_byte_fallback(encoder):
    # transformers 5's T5Tokenizer would rebuild the model and map these characters to <unk>
    ids = encoder.tokenizer("色调").input_ids
    assert encoder.tokenizer.unk_token_id not in ids and len(ids) == 8  # "▁" + 2 chars x 3 UTF-8 bytes + </s>
    ctx = encoder.encode(["色调"])
    assert torch.all(ctx[0, :8].abs().sum(dim=-1) > 0) and torch.all(ctx[0, 8:] == 0)


def test_tiny_tokenizer_reloads_as_t5_tokenizer_fast(tmp_path):
    from transformers import T5TokenizerFast

    from movakit.loading.demo_tokenizer import write_tiny_tokenizer

    size = write_tiny_tokenizer(tmp_path)
    tok = T5TokenizerFast.from_pretrained(str(tmp_path))
    assert len(tok) == size
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok("the cat").input_ids[-1] == 1
