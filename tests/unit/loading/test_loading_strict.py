"""Strict loading into meta-built modules: assignment, dtype/device, tied weights, weight norm, every error."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from movakit.loading import CheckpointError, build_on_meta, load_component_strict, open_tensor_source
from movakit.loading.renames import fuse_weight_norm, plan_recipes


class Toy(nn.Module):
    """Two linears, a persistent buffer, a non-persistent buffer computed in __init__, and a tied pair."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 2)
        self.emb = nn.Embedding(5, 4)
        self.out = nn.Linear(4, 5, bias=False)
        self.out.weight = self.emb.weight  # tied
        self.register_buffer("counter", torch.zeros(2, dtype=torch.int64))
        self.register_buffer("table", torch.arange(6, dtype=torch.float64) / 7, persistent=False)


def _stored(seed=0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    ref = Toy()
    sd = {k: v.clone() for k, v in ref.state_dict().items() if k != "out.weight"}
    sd["counter"] = torch.tensor([3, 4])
    return sd


def _write(folder, tensors, name="diffusion_pytorch_model.safetensors"):
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / name))
    return folder


def test_build_on_meta_keeps_buffers_real():
    toy = build_on_meta(Toy)
    assert all(p.is_meta for p in toy.parameters())
    assert not toy.table.is_meta and torch.equal(toy.table, torch.arange(6, dtype=torch.float64) / 7)
    assert toy.out.weight is toy.emb.weight
    assert nn.Module.register_parameter.__name__ == "register_parameter"  # patch removed
    assert not nn.Linear(2, 2).weight.is_meta


def test_build_on_meta_skips_initialising_meta_tensors_only(monkeypatch):
    calls = []
    kaiming = nn.init.kaiming_uniform_
    monkeypatch.setattr(nn.init, "kaiming_uniform_", lambda t, *a, **k: calls.append(t.device.type) or kaiming(t, *a, **k))

    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 4)  # its reset_parameters initialises the (meta) weight
            self.register_buffer("real", nn.init.ones_(torch.empty(2)))  # an initialiser on a real tensor still runs

    mixed = build_on_meta(Mixed)
    assert calls == [] and mixed.fc.weight.is_meta and torch.equal(mixed.real, torch.ones(2))
    nn.Linear(3, 4)  # the patch is gone: real layers are initialised again
    assert calls == ["cpu"]


def test_load_assigns_every_tensor_and_ties(tmp_path):
    stored = _stored()
    folder = _write(tmp_path / "c", stored)
    toy = load_component_strict(build_on_meta(Toy), folder)
    for key, value in stored.items():
        assert torch.equal(toy.state_dict()[key], value), key
    assert toy.out.weight is toy.emb.weight
    assert not any(t.is_meta for t in [*toy.parameters(), *toy.buffers()])
    assert not toy.training
    x = torch.randn(1, 3)
    assert toy.fc2(toy.fc1(x)).shape == (1, 2)


def test_either_tied_name_is_accepted(tmp_path):
    stored = _stored()
    stored["out.weight"] = stored.pop("emb.weight")
    toy = load_component_strict(build_on_meta(Toy), _write(tmp_path / "c", stored))
    assert torch.equal(toy.emb.weight, stored["out.weight"])


def test_dtype_cast_keeps_int_buffers_and_nonpersistent_float64(tmp_path):
    folder = _write(tmp_path / "c", _stored())
    toy = load_component_strict(build_on_meta(Toy), folder, dtype=torch.bfloat16)
    assert toy.fc1.weight.dtype == torch.bfloat16
    assert toy.counter.dtype == torch.int64
    assert toy.table.dtype == torch.float64


def test_stored_dtype_kept_when_dtype_none(tmp_path):
    stored = {k: (v.to(torch.float16) if v.is_floating_point() else v) for k, v in _stored().items()}
    toy = load_component_strict(build_on_meta(Toy), _write(tmp_path / "c", stored))
    assert toy.fc1.weight.dtype == torch.float16


def test_missing_tensor_names_tensor_and_file(tmp_path):
    stored = _stored()
    del stored["fc2.bias"]
    with pytest.raises(CheckpointError) as err:
        load_component_strict(build_on_meta(Toy), _write(tmp_path / "c", stored))
    assert "'fc2.bias'" in str(err.value) and "diffusion_pytorch_model.safetensors" in str(err.value)


def test_missing_tensor_in_sharded_folder_names_the_index(tmp_path):
    stored = _stored()
    del stored["fc1.bias"]
    folder = tmp_path / "c"
    folder.mkdir()
    save_file(stored, str(folder / "model-00001-of-00001.safetensors"))
    (folder / "model.safetensors.index.json").write_text(
        '{"weight_map": {' + ", ".join(f'"{k}": "model-00001-of-00001.safetensors"' for k in stored) + "}}"
    )
    with pytest.raises(CheckpointError, match="'fc1.bias'.*model.safetensors.index.json"):
        load_component_strict(build_on_meta(Toy), folder)


def test_unexpected_tensor_names_tensor_and_file(tmp_path):
    stored = _stored()
    stored["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected.*'extra.weight'.*diffusion_pytorch_model.safetensors"):
        load_component_strict(build_on_meta(Toy), _write(tmp_path / "c", stored))


def test_wrong_shape_names_tensor_file_and_both_shapes(tmp_path):
    stored = _stored()
    stored["fc1.weight"] = torch.zeros(4, 5)
    with pytest.raises(CheckpointError) as err:
        load_component_strict(build_on_meta(Toy), _write(tmp_path / "c", stored))
    msg = str(err.value)
    assert "'fc1.weight'" in msg and "diffusion_pytorch_model.safetensors" in msg
    assert "[4, 5]" in msg and "[4, 3]" in msg


def test_error_happens_before_any_tensor_is_assigned(tmp_path):
    stored = _stored()
    stored["fc2.weight"] = torch.zeros(9, 9)
    toy = build_on_meta(Toy)
    with pytest.raises(CheckpointError):
        load_component_strict(toy, _write(tmp_path / "c", stored))
    assert all(p.is_meta for p in toy.parameters())


class Convs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 5, 3, padding=1)
        self.up = nn.ConvTranspose1d(5, 2, 4, stride=2, padding=1)

    def forward(self, x):
        return self.up(self.conv(x))


@pytest.mark.filterwarnings("ignore:.*weight_norm.*is deprecated:FutureWarning")
@pytest.mark.parametrize("form", ["legacy", "parametrizations"])
def test_weight_norm_checkpoint_fuses_to_the_same_weights(tmp_path, form):
    torch.manual_seed(0)
    normed = Convs()
    for layer in (normed.conv, normed.up):
        if form == "legacy":
            nn.utils.weight_norm(layer)
        else:
            nn.utils.parametrizations.weight_norm(layer)
        layer.bias.data.normal_()
    with torch.no_grad():
        for name, p in normed.named_parameters():  # magnitudes away from their init so fusion matters
            if name.endswith(("weight_g", "original0")):
                p.mul_(torch.rand_like(p) + 0.5)
    stored = {k: v.clone() for k, v in normed.state_dict().items()}
    suffix = ".weight_g" if form == "legacy" else ".parametrizations.weight.original0"
    assert f"conv{suffix}" in stored and "conv.weight" not in stored
    plain = load_component_strict(build_on_meta(Convs), _write(tmp_path / form, stored))
    x = torch.randn(2, 3, 7)
    with torch.no_grad():
        assert torch.allclose(plain(x), normed(x), atol=1e-6)


def test_fuse_weight_norm_formula():
    g, v = torch.tensor([[[2.0]], [[3.0]]]), torch.tensor([[[3.0, 4.0]], [[0.0, 1.0]]])
    assert torch.allclose(fuse_weight_norm(g, v), torch.tensor([[[1.2, 1.6]], [[0.0, 3.0]]]))


def test_weight_norm_errors_name_the_tensor(tmp_path):
    v = torch.randn(5, 3, 3)
    for name, tensors, fragment in [
        ("half", {"conv.weight_g": torch.ones(5, 1, 1)}, "no matching 'conv.weight_v'"),
        ("orphan", {"conv.weight_v": v}, "'conv.weight_v'.*no matching magnitude"),
        ("bad_g", {"conv.weight_g": torch.ones(5, 3, 1), "conv.weight_v": v}, "'conv.weight_g'.*\\[5, 1, 1\\]"),
        ("both", {"conv.weight_g": torch.ones(5, 1, 1), "conv.weight_v": v, "conv.weight": v.clone()}, "both"),
    ]:
        with pytest.raises(CheckpointError, match=fragment):
            plan_recipes(open_tensor_source(_write(tmp_path / name, tensors)))


def test_meta_build_of_a_large_layer_costs_no_memory():
    big = build_on_meta(lambda: nn.Linear(50_000, 50_000))  # 10 GB in float32 if it were real
    assert big.weight.is_meta and math.prod(big.weight.shape) == 2_500_000_000
