"""Reading a component folder of safetensors files: one file, or shards listed by a `*.safetensors.index.json`.

Files are opened with `safetensors.safe_open` (memory-mapped); a tensor's bytes are only copied out when it
is read, one tensor at a time, so a caller can move each tensor to its final dtype/device before reading the next.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open


class CheckpointError(Exception):
    """A checkpoint folder or file that does not match what the model expects (message names tensor and file)."""


# Names tried, in order, when a folder holds several candidate files. Official folders use the first two.
_PREFERRED_STEMS = ("diffusion_pytorch_model", "model")


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it looks like, read from the file header without reading its data."""

    file: Path
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype name, e.g. "BF16", "F32"


@dataclass(frozen=True)
class TensorSource:
    """The tensors of one component folder.

    `source` is the file a reader should name when a tensor is missing: the index for sharded folders,
    the single file otherwise.
    """

    folder: Path
    source: Path
    tensors: dict[str, TensorInfo]

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(sorted({info.file for info in self.tensors.values()}))

    @contextmanager
    def reader(self) -> Iterator[Callable[[str], torch.Tensor]]:
        """Context yielding `get(key) -> tensor` (CPU, stored dtype); each file is opened once and kept open."""
        handles: dict[Path, object] = {}
        with ExitStack() as stack:

            def get(key: str) -> torch.Tensor:
                info = self.tensors.get(key)
                if info is None:
                    raise CheckpointError(f"tensor {key!r} is not in {self.source}")
                if info.file not in handles:
                    handles[info.file] = stack.enter_context(safe_open(str(info.file), framework="pt", device="cpu"))
                return handles[info.file].get_tensor(key)

            yield get


def _header(path: Path) -> dict[str, TensorInfo]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            out = {}
            for key in handle.keys():
                tensor_slice = handle.get_slice(key)
                out[key] = TensorInfo(path, tuple(tensor_slice.get_shape()), tensor_slice.get_dtype())
            return out
    except FileNotFoundError as exc:
        raise CheckpointError(f"safetensors file {path} does not exist") from exc
    except Exception as exc:  # safetensors raises its own error types for a corrupt header
        raise CheckpointError(f"cannot read safetensors file {path}: {exc}") from exc


def _read_index(index_path: Path) -> dict[str, str]:
    try:
        data = json.loads(index_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read shard index {index_path}: {exc}") from exc
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"shard index {index_path} has no 'weight_map' object")
    for key, filename in weight_map.items():
        if not isinstance(filename, str) or "/" in filename or filename in ("", ".", ".."):
            raise CheckpointError(f"shard index {index_path}: tensor {key!r} maps to a bad file name {filename!r}")
    return weight_map


def _pick(candidates: list[Path], folder: Path, what: str) -> Path:
    if len(candidates) == 1:
        return candidates[0]
    for stem in _PREFERRED_STEMS:
        for path in candidates:
            if path.name.startswith(stem + "."):
                return path
    names = ", ".join(p.name for p in candidates)
    raise CheckpointError(f"{folder} holds several {what} ({names}); cannot tell which one is the checkpoint")


def open_tensor_source(folder: str | Path) -> TensorSource:
    """Index the tensors of a component folder (reads headers only).

    Raises CheckpointError naming the file for: no safetensors file, unreadable index, a shard file that the
    index names but that does not exist, a tensor the index places in a shard that lacks it, or a tensor that
    a shard holds but the index does not list.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"component folder {folder} does not exist")
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        index_path = _pick(indexes, folder, "shard indexes")
        weight_map = _read_index(index_path)
        by_file: dict[str, list[str]] = {}
        for key, filename in weight_map.items():
            by_file.setdefault(filename, []).append(key)
        tensors: dict[str, TensorInfo] = {}
        for filename, keys in sorted(by_file.items()):
            shard = folder / filename
            if not shard.is_file():
                raise CheckpointError(
                    f"shard file {shard} (listed in {index_path.name} for tensor {keys[0]!r}) does not exist"
                )
            header = _header(shard)
            for key in keys:
                if key not in header:
                    raise CheckpointError(f"tensor {key!r} is listed in {index_path} for {shard} but {shard} lacks it")
                tensors[key] = header[key]
            extra = sorted(set(header) - set(keys))
            if extra:
                raise CheckpointError(f"tensor {extra[0]!r} is in {shard} but not listed in {index_path}")
        return TensorSource(folder, index_path, tensors)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors file in {folder}")
    path = _pick(files, folder, "safetensors files")
    return TensorSource(folder, path, _header(path))


def load_state_dict(
    folder: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Read every tensor of a component folder (single file or sharded) into a dict.

    Floating-point tensors are cast to `dtype` when it is given; integer tensors keep their dtype.
    Tensors are read one at a time and moved before the next is read.
    """
    source = open_tensor_source(folder)
    out: dict[str, torch.Tensor] = {}
    with source.reader() as get:
        for key in source.tensors:
            out[key] = cast_tensor(get(key), dtype=dtype, device=device)
    return out


def cast_tensor(tensor: torch.Tensor, *, dtype: torch.dtype | None, device: str | torch.device) -> torch.Tensor:
    """Move to `device`; cast to `dtype` only if both are floating point (ints and bools keep their dtype)."""
    if dtype is not None and tensor.is_floating_point() and dtype.is_floating_point:
        return tensor.to(device=device, dtype=dtype)
    return tensor.to(device=device)
