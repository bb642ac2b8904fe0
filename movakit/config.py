"""Turn a checkpoint folder's config.json into a frozen architecture dataclass, strictly.

Shared by the DiT, bridge, audio VAE and scheduler configs. Key rules (the same for every component):
- keys starting with "_" (``_class_name``, ``_diffusers_version``, ...) are ignored, and so are the keys a
  component lists as not changing the module;
- an unknown key is a ValueError naming the key (a typo must not silently select a default);
- a missing key without a default is a ValueError naming the key;
- with ``normalise_fields`` (the DiT and bridge configs), values are type-checked against the dataclass annotations
  (bool is not accepted as int, int is accepted as float, a JSON list is accepted for a tuple field).
Range checks and "flag value the release does not use" checks live in each config's ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")
C = TypeVar("C", bound="JsonConfig")


class JsonConfig:
    """from_dict / from_json / to_dict for a frozen architecture dataclass, by the rules above. A subclass names
    its component (for messages) in COMPONENT and may map alternative key spellings to field names in ALIASES."""

    COMPONENT: ClassVar[str]
    ALIASES: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        return config_from_dict(cls, data, component=cls.COMPONENT, aliases=cls.ALIASES)

    @classmethod
    def from_json(cls: type[C], path: str | Path) -> C:
        return config_from_json(cls, path, component=cls.COMPONENT, aliases=cls.ALIASES)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, component: str,
                     aliases: Mapping[str, str] | None = None, ignored: tuple[str, ...] = ()) -> T:
    """Build ``cls`` from ``data`` (a parsed config.json); ``aliases`` maps alternative key spellings to field names,
    keys in ``ignored`` are known not to change the module and are skipped."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{component} config: expected a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    aliases = aliases or {}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ValueError(f"{component} config: key {key!r} is not a string")
        if key.startswith("_") or key in ignored:
            continue
        name = aliases.get(key, key)
        if name not in names:
            raise ValueError(f"{component} config: unknown key {key!r}")
        if name in kwargs:
            raise ValueError(f"{component} config: key {key!r} given twice (also as an alternative spelling)")
        kwargs[name] = value
    for f in dataclasses.fields(cls):
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default and f.name not in kwargs:
            raise ValueError(f"{component} config: missing key {f.name!r}")
    return cls(**kwargs)


def config_from_json(cls: type[T], path: str | Path, *, component: str,
                     aliases: Mapping[str, str] | None = None, ignored: tuple[str, ...] = ()) -> T:
    """Read ``path`` (a config.json) and build ``cls`` with :func:`config_from_dict`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{component} config: {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{component} config: {path} is not valid JSON ({exc})") from None
    return config_from_dict(cls, data, component=component, aliases=aliases, ignored=ignored)


def normalise_fields(obj: Any, *, component: str) -> None:
    """Type-check every field of the frozen dataclass ``obj`` in place (list -> tuple, int -> float where declared)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        fixed = _coerce(value, hints[f.name], component=component, name=f.name)
        if fixed is not value:
            object.__setattr__(obj, f.name, fixed)


def config_to_dict(obj: Any) -> dict[str, Any]:
    """The official config.json keys and values of a config dataclass (tuples written as lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _coerce(value: Any, hint: Any, *, component: str, name: str) -> Any:
    where = f"{component} config: {name!r}"
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list of integers, got {value!r}")
        args = typing.get_args(hint)
        if not (len(args) == 2 and args[1] is Ellipsis) and len(value) != len(args):
            raise ValueError(f"{where} must have {len(args)} entries, got {list(value)!r}")
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int) or item <= 0:
                raise ValueError(f"{where} must hold positive integers, got {list(value)!r}")
        return value if isinstance(value, tuple) else tuple(value)
    raise TypeError(f"{where}: unsupported annotation {hint!r}")  # a programming error in the dataclass


def require_positive(obj: Any, names: tuple[str, ...], *, component: str) -> None:
    """ValueError naming the first field in ``names`` that is not > 0."""
    for name in names:
        if getattr(obj, name) <= 0:
            raise ValueError(f"{component} config: {name!r} must be > 0, got {getattr(obj, name)!r}")


def reject_flag(obj: Any, name: str, supported: Any, *, component: str) -> None:
    """NotImplementedError naming ``name`` when its value is not the one the release uses."""
    value = getattr(obj, name)
    if value != supported:
        raise NotImplementedError(
            f"{component} config: {name}={json.dumps(value)} is not supported "
            f"(the released MOVA checkpoints use {json.dumps(supported)})")


# Flags of the official Wan constructor that the MOVA release leaves off in both towers.
_DIT_OFF_FLAGS = ("has_image_input", "has_image_pos_emb", "has_ref_conv", "add_control_adapter", "seperated_timestep",
                  "require_clip_embedding", "fuse_vae_embedding_in_latents")


def check_dit_config(obj: Any, *, component: str) -> None:
    """The checks both DiT configs share: field types, positive sizes and eps, dim divisible by num_heads, and the
    official flags the release leaves off (NotImplementedError when one is on)."""
    normalise_fields(obj, component=component)
    require_positive(obj, ("dim", "in_dim", "ffn_dim", "out_dim", "text_dim", "freq_dim", "num_heads", "num_layers"),
                     component=component)
    if obj.eps <= 0:
        raise ValueError(f"{component} config: 'eps' must be > 0, got {obj.eps!r}")
    if obj.dim % obj.num_heads:
        raise ValueError(f"{component} config: 'dim' {obj.dim} is not divisible by 'num_heads' {obj.num_heads}")
    for flag in _DIT_OFF_FLAGS:
        reject_flag(obj, flag, False, component=component)
