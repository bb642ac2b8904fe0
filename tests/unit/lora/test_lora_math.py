"""The official LoRA math on the tiny checkpoint: y = W x + b + B(A x)·(alpha/rank)·scale, unmerged by default
(base weights untouched), merged on request; merged ≈ unmerged, scale 0 == base exactly, and the adapter changes
the sampler's output."""

from __future__ import annotations

import pytest
import torch
from tests.unit.lora.conftest import small_request
from official_writers import random_lora, write_accelerate_fsdp, write_low_resource

from movakit.lora.adapter import LoraAdapter, applied, merge_into, trainable
from movakit.lora.targets import components_of
from movakit.lora.store import read_any
from movakit.stages.denoise import denoise


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, meta):
    root = tmp_path_factory.mktemp("adapters")
    acc = read_any(write_accelerate_fsdp(root / "acc", random_lora(meta, "accelerate", 4, seed=7)))
    low = read_any(write_low_resource(root / "low.pt", random_lora(meta, "attention", 2, seed=8), rank=2, alpha=4.0))
    return {"accelerate": acc, "low_resource": low}


def test_one_layer_follows_the_formula(fresh_models):
    models = fresh_models()
    layer = models.video_dit.blocks[0].self_attn.q
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, layer.in_features, generator=g), torch.randn(layer.out_features, 3, generator=g)
    adapter = LoraAdapter(rank=3, alpha=6.0, targets="attention", layers={"video_dit.blocks.0.self_attn.q": (a, b)})
    x = torch.randn(5, layer.in_features, generator=g)
    with applied(models, adapter, scale=0.5):
        y = layer(x)
    expected = x @ layer.weight.T + layer.bias + (x @ a.T @ b.T) * (6.0 / 3) * 0.5
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
    assert not layer._forward_hooks  # the hook is gone after the block


@pytest.mark.parametrize("kind", ["accelerate", "low_resource"])
def test_adapter_changes_output_merged_matches_unmerged_scale_zero_is_base(fresh_models, adapters, kind):
    adapter = adapters[kind]
    models = fresh_models()
    before = {k: v.clone() for k, v in models.video_dit.state_dict().items()}
    base = denoise(models, small_request())
    with applied(models, adapter, scale=0.0):
        zero = denoise(models, small_request())
    with applied(models, adapter, scale=0.8):
        unmerged = denoise(models, small_request())
    assert all(torch.equal(before[k], v) for k, v in models.video_dit.state_dict().items())  # never written
    assert torch.equal(zero.video_latents, base.video_latents) and torch.equal(zero.audio_latents, base.audio_latents)
    assert (unmerged.video_latents - base.video_latents).abs().max() > 1e-2
    assert (unmerged.audio_latents - base.audio_latents).abs().max() > 1e-2
    after = denoise(models, small_request())  # nothing left behind by the adapter
    assert torch.equal(after.video_latents, base.video_latents)

    merged_models = fresh_models()
    changed = merge_into(merged_models, adapter, scale=0.8)
    assert changed == len(adapter.layers)
    merged = denoise(merged_models, small_request())
    torch.testing.assert_close(merged.video_latents, unmerged.video_latents, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(merged.audio_latents, unmerged.audio_latents, rtol=1e-4, atol=1e-4)


def test_hooks_are_removed_when_the_run_raises(fresh_models, adapters):
    models = fresh_models()
    with pytest.raises(RuntimeError, match="boom"):
        with applied(models, adapters["accelerate"]):
            raise RuntimeError("boom")
    assert not any(m._forward_hooks for m in models.video_dit.modules())


def test_a_trainable_adapter_on_a_bf16_layer_follows_every_update(fresh_models):
    """float32 masters on a bf16 layer (the trainer on CUDA): each forward uses the masters' current values cast to
    bf16, and each backward reaches the masters (a copy cast once when attached would stay at B = 0)."""
    models = fresh_models()
    torch.manual_seed(0)
    adapter = trainable(components_of(models), "attention", rank=2, alpha=2.0)
    a, b = adapter.layers["dual_tower_bridge.video_to_audio_conditioners.0.inner.v"]
    layer = models.bridge.video_to_audio_conditioners["0"].inner.v.to(torch.bfloat16)
    x = torch.randn(3, layer.in_features, dtype=torch.bfloat16)
    optimizer = torch.optim.SGD([a, b], lr=0.5)
    outputs = []
    with applied(models, adapter):
        for _ in range(3):
            optimizer.zero_grad()
            y = layer(x)
            y.float().square().sum().backward()
            optimizer.step()
            outputs.append(y.detach())
        with torch.no_grad():
            now = layer(x)
    assert a.dtype == b.dtype == torch.float32 and b.grad is not None and a.grad.abs().max() > 0
    assert not torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[1], outputs[2])
    base = torch.nn.functional.linear(x, layer.weight, layer.bias)
    branch = torch.nn.functional.linear(torch.nn.functional.linear(x, a.detach().bfloat16()), b.detach().bfloat16())
    assert torch.equal(now, base + branch * adapter.scaling)


def test_a_trainable_adapter_starts_as_the_base_and_gets_gradients(fresh_models):
    models = fresh_models()
    torch.manual_seed(0)
    adapter = trainable(components_of(models), "attention", rank=2, alpha=2.0)
    a, b = adapter.layers["dual_tower_bridge.video_to_audio_conditioners.0.inner.v"]
    assert a.requires_grad and b.requires_grad and not b.any() and a.abs().max() > 0
    layer = models.bridge.video_to_audio_conditioners["0"].inner.v
    x = torch.randn(3, layer.in_features)
    with applied(models, adapter):
        y = layer(x)
        y.square().sum().backward()
    assert torch.equal(y.detach(), torch.nn.functional.linear(x, layer.weight, layer.bias))  # B = 0
    assert b.grad is not None and b.grad.abs().max() > 0 and a.grad is not None
