"""Both official LoRA save formats are read as the official trainers write them, their known config nonsense is
reported and repaired, unsafe pickles are refused, and our stored form and the export round-trip."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from official_writers import random_lora, write_accelerate_fsdp, write_accelerate_plain, write_low_resource

from movakit.lora.adapter import AdapterError, check_fits
from movakit.lora.store import read_any
from movakit.lora.base_model import for_checkpoint
from movakit.lora.official import write_accelerate
from movakit.lora.store import MANIFEST_NAME, WEIGHTS_NAME, read_folder, write_folder
from movakit.lora.targets import target_layers


def test_official_target_layers_are_the_block_linears_and_bridge_qkvo(meta):
    acc = set(target_layers(meta, "accelerate"))
    att = set(target_layers(meta, "attention"))
    block = [f"blocks.0.{a}.{n}" for a in ("self_attn", "cross_attn") for n in "qkvo"]
    for tower in ("video_dit", "video_dit_2", "audio_dit"):
        assert {f"{tower}.{p}" for p in block} <= att
        assert {f"{tower}.{p}" for p in (*block, "blocks.1.ffn.0", "blocks.1.ffn.2")} <= acc
        for never in ("head.head", "text_embedding.0", "text_embedding.2", "time_embedding.0", "time_projection.1"):
            assert f"{tower}.{never}" not in acc
    assert {f"dual_tower_bridge.{d}_conditioners.1.inner.{n}" for d in ("audio_to_video", "video_to_audio")
            for n in "qkvo"} <= att
    # tiny: 2 blocks x (8 attention + 2 ffn) per tower, 2 layers x 2 directions x 4 in the bridge
    assert len(acc) == 3 * 2 * 10 + 2 * 2 * 4 and len(att) == 3 * 2 * 8 + 2 * 2 * 4
    assert att < acc


def test_accelerate_fsdp_save_rank_from_shapes_and_the_hard_coded_config_reported(tmp_path, meta):
    lora = random_lora(meta, "accelerate", 4, seed=1, dtype=torch.bfloat16)
    adapter = read_any(write_accelerate_fsdp(tmp_path / "final", lora))
    assert (adapter.rank, adapter.targets, len(adapter.layers)) == (4, "accelerate", len(lora))
    assert adapter.alpha == 4.0  # config says rank 16 / alpha 16: the official loader's scaling 1 is kept
    assert any("does not match the tensors' rank 4" in n for n in adapter.notes)
    key = "video_dit.blocks.1.ffn.2"
    assert torch.equal(adapter.layers[key][0], lora[key][0]) and adapter.layers[key][1].dtype == torch.bfloat16
    check_fits(adapter, meta)


def test_accelerate_plain_save_class_name_as_rank_and_default_key_variant(tmp_path, meta):
    lora = random_lora(meta, "accelerate", 2, seed=2)
    adapter = read_any(write_accelerate_plain(tmp_path / "step-200", lora))
    assert (adapter.rank, adapter.alpha) == (2, 2.0)
    assert any("'MOVATrain' is not a number" in n for n in adapter.notes)
    assert set(adapter.layers) == set(lora)


def test_low_resource_pickle_alpha_from_its_fields(tmp_path, meta):
    lora = random_lora(meta, "attention", 4, seed=3, dtype=torch.bfloat16)
    adapter = read_any(write_low_resource(tmp_path / "step-100" / "lora_weights.pt", lora, rank=4, alpha=8.0))
    assert (adapter.rank, adapter.alpha, adapter.scaling, adapter.targets) == (4, 8.0, 2.0, "attention")
    assert adapter.notes == ()
    check_fits(adapter, meta)


class _Payload:
    """Unpickling this would need arbitrary code."""


def test_a_pickle_that_needs_code_is_refused(tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    torch.save({"video_dit.blocks.0.self_attn.q.lora_A.weight": _Payload()}, folder / "lora_weights.pt")
    with pytest.raises(AdapterError, match="arbitrary code"):
        read_any(folder)


def test_the_empty_official_save_is_refused(tmp_path):
    folder = write_accelerate_plain(tmp_path / "empty", {})
    with pytest.raises(AdapterError, match="holds no LoRA tensors"):
        read_any(folder)


def test_unmatched_key_wrong_shape_and_missing_half_name_the_key(tmp_path, meta):
    lora = random_lora(meta, "accelerate", 2, seed=4)
    adapter = read_any(write_accelerate_fsdp(tmp_path / "a", lora))
    a, b = lora["video_dit.blocks.0.self_attn.q"]
    bad = dataclasses.replace(adapter, layers={**adapter.layers, "video_dit.head.head": (a, b)})
    with pytest.raises(AdapterError, match=r"video_dit\.head\.head: matches no layer"):
        check_fits(bad, meta)
    bad = dataclasses.replace(adapter, layers={**adapter.layers, "video_dit.blocks.7.self_attn.q": (a, b)})
    with pytest.raises(AdapterError, match=r"video_dit\.blocks\.7\.self_attn\.q: matches no layer"):
        check_fits(bad, meta)
    wide = (torch.zeros(2, 64), torch.zeros(48, 2))
    bad = dataclasses.replace(adapter, layers={**adapter.layers, "audio_dit.blocks.0.ffn.0": wide})
    with pytest.raises(AdapterError, match=r"audio_dit\.blocks\.0\.ffn\.0: .*another model size"):
        check_fits(bad, meta)
    # a low-resource adapter may only hold attention layers
    att = dataclasses.replace(adapter, targets="attention")
    with pytest.raises(AdapterError, match=r"ffn\.\d: matches no layer"):
        check_fits(att, meta)
    state = {"video_dit.blocks.0.self_attn.q.lora_A.weight": a}
    torch.save(state, tmp_path / "a" / "lora_weights.pt")
    with pytest.raises(AdapterError, match=r"'video_dit\.blocks\.0\.self_attn\.q' has lora_A but no lora_B"):
        read_any(tmp_path / "a")


def test_stored_form_round_trip_checksum_and_base_identity(tmp_path, meta, tiny_checkpoint):
    official = write_accelerate_fsdp(tmp_path / "o", random_lora(meta, "accelerate", 4, seed=5))
    adapter = for_checkpoint(read_any(official), tiny_checkpoint)
    assert adapter.base.startswith("sha256:")
    back = read_folder(write_folder(adapter, tmp_path / "ours"))
    assert (back.rank, back.alpha, back.targets, back.base, back.notes) == (4, 4.0, "accelerate", adapter.base,
                                                                            adapter.notes)
    assert all(torch.equal(back.layers[k][1], adapter.layers[k][1]) for k in adapter.layers)
    weights = tmp_path / "ours" / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:-1] + b" ")
    with pytest.raises(AdapterError, match="sha256"):
        read_folder(tmp_path / "ours")
    (tmp_path / "ours" / MANIFEST_NAME).write_text('{"format": "movakit-lora", "version": 1, "rank": "16"}')
    with pytest.raises(AdapterError, match="field 'rank'"):
        read_folder(tmp_path / "ours")
    # another base model: refused before any key is looked at
    other = dataclasses.replace(adapter, base="sha256:" + "0" * 64)
    with pytest.raises(AdapterError, match="made for base model"):
        for_checkpoint(other, tiny_checkpoint)


def test_export_writes_the_accelerate_form_back_with_the_true_rank_and_alpha(tmp_path, meta):
    adapter = read_any(write_low_resource(tmp_path / "lr.pt", random_lora(meta, "attention", 4, seed=6), rank=4,
                                          alpha=8.0))
    folder = write_accelerate(adapter, tmp_path / "official")
    config = torch.load(folder / "lora_config.pt", weights_only=True)
    assert config == {"rank": 4, "alpha": 8.0, "target_modules": []}
    again = read_any(folder)
    assert (again.rank, again.alpha, again.notes) == (4, 8.0, ())
    assert all(torch.equal(again.layers[k][0], adapter.layers[k][0]) for k in adapter.layers)
