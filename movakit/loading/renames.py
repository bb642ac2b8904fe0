"""How each model tensor is made from the tensors stored in a checkpoint folder.

Most tensors are stored under the model's own (official) key. The one rewrite the release needs is weight
norm: a DAC trained with weight-normed convolutions and saved without `remove_weight_norm()` stores each conv
weight as a magnitude `g` and a direction `v`, either as `<p>.weight_g` / `<p>.weight_v` (torch.nn.utils.weight_norm)
or as `<p>.parametrizations.weight.original0` / `.original1` (torch.nn.utils.parametrizations.weight_norm).
Both fuse to `<p>.weight = g * v / ||v||`, the norm taken over every dim but dim 0 (the default `dim=0`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from movakit.loading.safetensors_io import CheckpointError, TensorSource

# (suffix of the magnitude key, suffix of the direction key) for each stored weight-norm form.
_WEIGHT_NORM_FORMS = (
    (".weight_g", ".weight_v"),
    (".parametrizations.weight.original0", ".parametrizations.weight.original1"),
)


@dataclass(frozen=True)
class Recipe:
    """One model tensor: the stored keys it is read from, the resulting shape, the file to name in errors."""

    sources: tuple[str, ...]
    shape: tuple[int, ...]
    file: Path
    build: Callable[[list[torch.Tensor]], torch.Tensor]


def _identity(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0]


def fuse_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """weight = g * v / ||v||, norm over all dims but 0, computed in float32 and returned in v's dtype."""
    v32 = v.float()
    norm = v32.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return (g.float() * v32 / norm).to(v.dtype)


def _fuse(tensors: list[torch.Tensor]) -> torch.Tensor:
    return fuse_weight_norm(tensors[0], tensors[1])


def plan_recipes(source: TensorSource) -> dict[str, Recipe]:
    """Map every model key that the folder can provide to the recipe that builds it."""
    recipes: dict[str, Recipe] = {}
    paired: set[str] = set()
    for g_suffix, v_suffix in _WEIGHT_NORM_FORMS:
        for g_key, g_info in source.tensors.items():
            if not g_key.endswith(g_suffix):
                continue
            prefix = g_key[: -len(g_suffix)]
            v_key = prefix + v_suffix
            v_info = source.tensors.get(v_key)
            if v_info is None:
                raise CheckpointError(f"tensor {g_key!r} in {g_info.file} has no matching {v_key!r}")
            expected_g = (v_info.shape[0],) + (1,) * (len(v_info.shape) - 1)
            if g_info.shape != expected_g:
                raise CheckpointError(
                    f"tensor {g_key!r} in {g_info.file} has shape {list(g_info.shape)}, "
                    f"weight norm over dim 0 of {v_key!r} needs {list(expected_g)}"
                )
            weight_key = prefix + ".weight"
            if weight_key in source.tensors:
                raise CheckpointError(f"{g_info.file} holds both {weight_key!r} and its weight-norm pair {g_key!r}")
            recipes[weight_key] = Recipe((g_key, v_key), v_info.shape, v_info.file, _fuse)
            paired.update((g_key, v_key))
        for v_key, v_info in source.tensors.items():
            if v_key.endswith(v_suffix) and v_key not in paired:
                raise CheckpointError(f"tensor {v_key!r} in {v_info.file} has no matching magnitude tensor")
    for key, info in source.tensors.items():
        if key not in paired:
            recipes[key] = Recipe((key,), info.shape, info.file, _identity)
    return recipes
