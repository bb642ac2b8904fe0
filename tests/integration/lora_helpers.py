"""Random LoRA adapters for the tiny demo checkpoint (a trained adapter's B is nonzero, unlike a fresh one)."""

from __future__ import annotations

import torch

from movakit.loading import MovaCheckpoint
from movakit.loading.demo import default_demo_checkpoint
from movakit.lora.adapter import LoraAdapter
from movakit.lora.base_model import meta_components
from movakit.lora.targets import base_identity, target_layers


def random_adapter(kind: str, rank: int, seed: int) -> LoraAdapter:
    """An adapter on every `kind` target layer of the demo checkpoint, stamped with its base identity."""
    components = meta_components(MovaCheckpoint(default_demo_checkpoint()))
    g = torch.Generator().manual_seed(seed)
    layers = {key: (torch.randn(rank, layer.in_features, generator=g) * 0.2,
                    torch.randn(layer.out_features, rank, generator=g) * 0.2)
              for key, layer in target_layers(components, kind).items()}
    identity = base_identity({name: module.config for name, module in components.items()})
    return LoraAdapter(rank=rank, alpha=float(rank), targets=kind, layers=layers, base=identity)
