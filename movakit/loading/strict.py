"""Strict loading of a component folder into a module whose parameters live on the meta device.

Build the module with `build_on_meta(lambda: Cls(config))`: parameters take no memory, buffers computed in
`__init__` (RoPE tables and the like) stay real. `load_component_strict` then reads the tensors one at a time,
casts each to the requested dtype/device and assigns it in place of the meta parameter, so the weights never
exist twice in memory. Any missing, unexpected or mis-shaped tensor raises CheckpointError naming the tensor
and the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from movakit.loading.renames import Recipe, plan_recipes
from movakit.loading.safetensors_io import CheckpointError, TensorSource, cast_tensor, open_tensor_source

M = TypeVar("M", bound=nn.Module)

_MAX_NAMED = 5  # how many offending tensor names an error message lists


# torch.nn.init functions the layers' reset_parameters call. On a meta tensor they still cost ~0.4 ms each (they
# run through Python decompositions): a release-size video expert spent about a second of its build in them.
_INITIALISERS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                 "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_")


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """While active, every parameter registered on any module is replaced by a meta tensor of the same shape.

    Allocation by `torch.empty` is lazy, so a large layer costs no real memory before it is moved; the
    torch.nn.init initialisers return a meta tensor untouched (real tensors are initialised as usual). Not
    thread-safe: it patches `nn.Module.register_parameter` and those functions for the duration of the block.
    """
    original = nn.Module.register_parameter
    initialisers = {name: getattr(nn.init, name) for name in _INITIALISERS}

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    def skip_meta(init: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def initialise(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            return tensor if tensor.is_meta else init(tensor, *args, **kwargs)
        return initialise

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    for name, init in initialisers.items():
        setattr(nn.init, name, skip_meta(init))
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]
        for name, init in initialisers.items():
            setattr(nn.init, name, init)


def build_on_meta(factory: Callable[[], M]) -> M:
    """Call `factory()` with parameters placed on the meta device (see `parameters_on_meta`)."""
    with parameters_on_meta():
        return factory()


def _alias_groups(module: nn.Module) -> list[list[str]]:
    """State-dict keys grouped by the tensor object they name (tied weights give groups of several keys)."""
    groups: dict[int, list[str]] = {}
    for key, tensor in module.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(key)
    return list(groups.values())


def _assign(module: nn.Module, key: str, value: torch.Tensor | nn.Parameter) -> nn.Parameter | torch.Tensor:
    prefix, _, name = key.rpartition(".")
    owner = module.get_submodule(prefix) if prefix else module
    if name in owner._parameters:
        old = owner._parameters[name]
        if not isinstance(value, nn.Parameter):
            value = nn.Parameter(value, requires_grad=old.requires_grad if old is not None else False)
        owner._parameters[name] = value
    elif name in owner._buffers:
        owner._buffers[name] = value
    else:
        raise CheckpointError(f"model has no parameter or buffer {key!r}")  # unreachable for state_dict keys
    return value


def _listing(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_MAX_NAMED])
    more = f" and {len(keys) - _MAX_NAMED} more" if len(keys) > _MAX_NAMED else ""
    return shown + more


def _check(module: nn.Module, source: TensorSource, recipes: dict[str, Recipe], groups: list[list[str]]) -> None:
    expected = module.state_dict(keep_vars=True)
    missing = [group[0] for group in groups if not any(k in recipes for k in group)]
    used = {src for key in expected if key in recipes for src in recipes[key].sources}
    unexpected = sorted(set(source.tensors) - used)
    problems = []
    if missing:
        problems.append(f"missing tensor(s) {_listing(missing)} from {source.source}")
    if unexpected:
        files = sorted({str(source.tensors[k].file) for k in unexpected[:_MAX_NAMED]})
        problems.append(f"unexpected tensor(s) {_listing(unexpected)} in {', '.join(files)}")
    for key, tensor in expected.items():
        recipe = recipes.get(key)
        if recipe is not None and recipe.shape != tuple(tensor.shape):
            problems.append(
                f"tensor {key!r} in {recipe.file} has shape {list(recipe.shape)}, "
                f"the model expects {list(tensor.shape)}"
            )
    if problems:
        raise CheckpointError(f"{type(module).__name__} checkpoint {source.folder}: " + "; ".join(problems))


def load_component_strict(
    module: M,
    folder: str | Path,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> M:
    """Load a component folder into `module` (built with `build_on_meta` or on a real device) and return it.

    Every state-dict key of the module must come from the folder, and every tensor of the folder must be used;
    weight-normed convolutions stored as `weight_g`/`weight_v` (or torch parametrizations) are fused into
    `weight`. Floating tensors are cast to `dtype` (None keeps the stored dtype), everything goes to `device`,
    and the module is put in eval mode.
    """
    source = open_tensor_source(folder)
    recipes = plan_recipes(source)
    groups = _alias_groups(module)
    _check(module, source, recipes, groups)

    with source.reader() as get:
        for group in groups:
            key = next(k for k in group if k in recipes)
            recipe = recipes[key]
            tensor = cast_tensor(recipe.build([get(s) for s in recipe.sources]), dtype=dtype, device=device)
            value = _assign(module, key, tensor)
            for alias in group:
                if alias != key:
                    _assign(module, alias, value)

    still_meta = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if still_meta:
        raise CheckpointError(f"{type(module).__name__}: tensor(s) {_listing(still_meta)} were never loaded")
    module.to(device=device)  # non-persistent buffers built in __init__
    return module.eval()
