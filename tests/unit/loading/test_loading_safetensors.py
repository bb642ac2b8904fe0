"""Reading component folders: single file vs shards + index, and every folder-level error names its file."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from movakit.loading import CheckpointError, load_state_dict, open_tensor_source


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "a.weight": torch.randn(4, 3, generator=g),
        "a.bias": torch.randn(4, generator=g),
        "b.weight": torch.randn(2, 4, generator=g).to(torch.bfloat16),
        "steps": torch.arange(5, dtype=torch.int64),
    }


def _write_sharded(folder, tensors, split=2, stem="diffusion_pytorch_model"):
    keys = list(tensors)
    weight_map = {}
    for i, part in enumerate((keys[:split], keys[split:])):
        name = f"{stem}-{i + 1:05d}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, str(folder / name))
        weight_map.update(dict.fromkeys(part, name))
    index = folder / f"{stem}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


def test_single_file_and_sharded_give_the_same_tensors(tmp_path):
    tensors = _tensors()
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    single.mkdir()
    sharded.mkdir()
    save_file(tensors, str(single / "diffusion_pytorch_model.safetensors"))
    _write_sharded(sharded, tensors)
    a, b = load_state_dict(single), load_state_dict(sharded)
    assert set(a) == set(b) == set(tensors)
    for key, value in tensors.items():
        assert a[key].dtype == b[key].dtype == value.dtype
        assert torch.equal(a[key], value) and torch.equal(b[key], value)
    source = open_tensor_source(sharded)
    assert len(source.files) == 2 and source.source.name.endswith(".index.json")


def test_dtype_casts_floats_only(tmp_path):
    save_file(_tensors(), str(tmp_path / "model.safetensors"))
    out = load_state_dict(tmp_path, dtype=torch.float16)
    assert out["a.weight"].dtype == torch.float16 and out["b.weight"].dtype == torch.float16
    assert out["steps"].dtype == torch.int64
    assert torch.equal(out["steps"], torch.arange(5))


def test_header_shapes_without_reading_data(tmp_path):
    save_file(_tensors(), str(tmp_path / "model.safetensors"))
    info = open_tensor_source(tmp_path).tensors
    assert info["a.weight"].shape == (4, 3) and info["b.weight"].dtype == "BF16"


def test_missing_shard_file_names_the_file_and_a_tensor(tmp_path):
    index = _write_sharded(tmp_path, _tensors())
    (tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError) as err:
        load_state_dict(tmp_path)
    msg = str(err.value)
    assert "diffusion_pytorch_model-00002-of-00002.safetensors" in msg and "'b.weight'" in msg
    assert index.name in msg


@pytest.mark.parametrize(
    "content, fragment",
    [("{not json", "cannot read shard index"), ('{"metadata": {}}', "no 'weight_map'"),
     ('{"weight_map": {"a.weight": "../x.safetensors"}}', "bad file name")],
)
def test_bad_index_names_the_index(tmp_path, content, fragment):
    save_file(_tensors(), str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(content)
    with pytest.raises(CheckpointError, match=fragment) as err:
        open_tensor_source(tmp_path)
    assert "model.safetensors.index.json" in str(err.value)


def test_index_lists_a_tensor_the_shard_lacks(tmp_path):
    index = _write_sharded(tmp_path, _tensors())
    data = json.loads(index.read_text())
    data["weight_map"]["ghost.weight"] = "diffusion_pytorch_model-00001-of-00002.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="'ghost.weight'.*00001-of-00002"):
        open_tensor_source(tmp_path)


def test_shard_holds_a_tensor_the_index_does_not_list(tmp_path):
    index = _write_sharded(tmp_path, _tensors())
    data = json.loads(index.read_text())
    del data["weight_map"]["a.bias"]
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="'a.bias'.*00001-of-00002.*not listed"):
        open_tensor_source(tmp_path)


def test_empty_folder_and_ambiguous_files(tmp_path):
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        open_tensor_source(tmp_path)
    save_file(_tensors(), str(tmp_path / "a.safetensors"))
    save_file(_tensors(), str(tmp_path / "b.safetensors"))
    with pytest.raises(CheckpointError, match="several"):
        open_tensor_source(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        open_tensor_source(tmp_path / "nope")


def test_corrupt_file_is_named(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        open_tensor_source(tmp_path)
