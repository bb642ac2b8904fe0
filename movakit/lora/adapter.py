"""A LoRA adapter in memory, checked against a model, and its math (docs/lora.md, "The math").

For a target linear y = W x + b with A (rank, in) and B (out, rank):
    unmerged:  y = W x + b + B(A x) · (alpha / rank) · scale      (a forward hook; W is never touched)
    merged:    W' = W + (B·A) · (alpha / rank) · scale             (W changed in place)
As in the official LoRALinear, the low-rank branch runs in the layer's dtype (the adapter cast to it: once per
device for a frozen adapter, in every forward for one being trained) and is added to the layer output after the
multiplication by the scaling.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import math

import torch
import torch.nn.functional as F
from torch import nn

from movakit.lora.targets import TARGET_KINDS, components_of, identity_of, target_layers


class AdapterError(ValueError):
    """An adapter that cannot be read or does not fit the model; the message names the file, key or field."""


@dataclass(frozen=True)
class LoraAdapter:
    """rank and alpha are global (the official layers share one); ``layers`` maps ``<component>.<path>`` to
    (A (rank, in), B (out, rank)); ``targets`` is the rule set its keys must satisfy ("accelerate" or "attention")."""

    rank: int
    alpha: float
    targets: str
    layers: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
    notes: tuple[str, ...] = field(default=())  # what was repaired or ignored when it was read
    base: str = ""  # identity of the base model it was made for (targets.base_identity); "" = not recorded

    def __post_init__(self) -> None:
        if self.targets not in TARGET_KINDS:
            raise AdapterError(f"targets: {self.targets!r} is not one of {', '.join(TARGET_KINDS)}")
        if not self.layers:
            raise AdapterError("the adapter holds no LoRA layers")
        if not self.rank > 0 or not self.alpha > 0:
            raise AdapterError(f"rank and alpha must be > 0, got rank {self.rank}, alpha {self.alpha}")
        for key, (a, b) in self.layers.items():
            if a.ndim != 2 or b.ndim != 2 or a.shape[0] != self.rank or b.shape[1] != self.rank:
                raise AdapterError(f"{key}: lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)} are not "
                                   f"(rank, in) / (out, rank) with rank {self.rank}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def num_parameters(self) -> int:
        return sum(a.numel() + b.numel() for a, b in self.layers.values())


def check_base(adapter: LoraAdapter, identity: str) -> None:
    """AdapterError when the adapter records a base model other than ``identity`` (one without a record passes;
    its keys and shapes are still checked by check_fits)."""
    if adapter.base and adapter.base != identity:
        raise AdapterError(f"base: the adapter was made for base model {adapter.base}, this model is {identity} "
                           "(another model size or layout)")


def rank_of(layers: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> int:
    """The one rank all layers share, read from the tensor shapes (A: (rank, in))."""
    ranks = {key: int(a.shape[0]) for key, (a, _b) in layers.items() if a.ndim == 2}
    if not ranks:
        raise AdapterError("the adapter holds no LoRA layers")
    if len(set(ranks.values())) != 1:
        first = next(iter(ranks))
        other = next(k for k, r in ranks.items() if r != ranks[first])
        raise AdapterError(f"{other}: rank {ranks[other]} differs from {first}: rank {ranks[first]} "
                           "(one adapter has one rank)")
    return next(iter(ranks.values()))


def check_fits(adapter: LoraAdapter, components: Mapping[str, nn.Module]) -> dict[str, nn.Linear]:
    """The target linear of every adapter key; AdapterError naming the first key that matches no target layer of
    ``components`` (official name -> module, e.g. built on the meta device) or whose shapes do not fit."""
    targets = target_layers(components, adapter.targets)
    found: dict[str, nn.Linear] = {}
    for key, (a, b) in adapter.layers.items():
        layer = targets.get(key)
        if layer is None:
            component = key.split(".", 1)[0]
            why = (f"the model has no component {component!r}" if component not in components
                   else f"no {adapter.targets!r} target layer of the model has this name")
            raise AdapterError(f"{key}: matches no layer ({why})")
        if a.shape[1] != layer.in_features or b.shape[0] != layer.out_features:
            raise AdapterError(f"{key}: lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)} do not fit the layer "
                               f"({layer.out_features} x {layer.in_features}); the adapter was made for another "
                               "model size")
        found[key] = layer
    return found


def _hook(a: torch.Tensor, b: torch.Tensor, scaling: float, dtype: torch.dtype):
    """The forward hook adding B(A x)·scaling with A, B in `dtype` on the input's device. Frozen A, B are cast once
    per device (with offload a layer runs on the CPU and on the accelerator); trainable ones in every forward, so
    the branch follows each optimizer step and the cast is part of the graph (gradients reach the masters)."""
    trainable = a.requires_grad or b.requires_grad
    per_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def add_low_rank(_module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        if trainable:
            a_x, b_x = (t.to(device=x.device, dtype=dtype) for t in (a, b))
        else:
            if x.device not in per_device:
                per_device[x.device] = (a.to(device=x.device, dtype=dtype), b.to(device=x.device, dtype=dtype))
            a_x, b_x = per_device[x.device]
        low_rank = F.linear(F.linear(x.to(a_x.dtype), a_x), b_x)  # (..., out) in the adapter dtype
        return output + low_rank.to(output.dtype) * scaling
    return add_low_rank


@contextmanager
def applied(models, adapter: LoraAdapter | None, scale: float = 1.0) -> Iterator[None]:
    """Unmerged: inside the block every target layer of ``models`` (a MovaModels) adds its low-rank branch; the
    base weights are never written. The hooks are removed on exit, also when the block raises. None: no adapter."""
    if adapter is None:
        yield
        return
    layers = check_fits(adapter, components_of(models))
    scaling = adapter.scaling * float(scale)
    handles = []
    try:
        for key, layer in layers.items():
            a, b = adapter.layers[key]
            handles.append(layer.register_forward_hook(_hook(a, b, scaling, layer.weight.dtype)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def merge_into(models, adapter: LoraAdapter, scale: float = 1.0) -> int:
    """Merged: W += (B·A) · alpha/rank · scale in every target layer, computed in float32 and rounded once to the
    weight dtype. The base weights are changed for good. Returns the number of layers changed."""
    layers = check_fits(adapter, components_of(models))
    scaling = adapter.scaling * float(scale)
    for key, layer in layers.items():
        a, b = (t.to(device=layer.weight.device, dtype=torch.float32) for t in adapter.layers[key])
        merged = layer.weight.float() + (b @ a) * scaling
        layer.weight.copy_(merged.to(layer.weight.dtype))
    return len(layers)


def use(models, adapter: LoraAdapter, scale: float, *, merge: bool) -> AbstractContextManager:
    """Check the adapter against ``models`` (recorded base identity, keys, shapes: AdapterError before any
    denoising), then either merge it now (the returned context does nothing) or return the unmerged context."""
    check_base(adapter, identity_of(models))
    check_fits(adapter, components_of(models))
    if merge:
        merge_into(models, adapter, scale)
        return nullcontext()
    return applied(models, adapter, scale)


def trainable(components: Mapping[str, nn.Module], targets: str, rank: int, alpha: float, *,
              dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
              generator: torch.Generator | None = None) -> LoraAdapter:
    """A fresh adapter to train on every ``targets`` layer of ``components`` (official name -> module), initialised
    as the official LoRALinear: A kaiming-uniform (a = sqrt 5), B zero, so it starts as the base model. Its tensors
    are leaves with requires_grad: hand them to an optimizer, run the model inside `applied`, save the result with
    movakit.lora.store or movakit.lora.official. Seed torch beforehand for a reproducible A."""
    layers = {}
    for key, layer in target_layers(components, targets).items():
        a = torch.empty(rank, layer.in_features, dtype=dtype, device=device)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
        b = torch.zeros(layer.out_features, rank, dtype=dtype, device=device)
        layers[key] = (a.requires_grad_(), b.requires_grad_())
    return LoraAdapter(rank=rank, alpha=float(alpha), targets=targets, layers=layers)
