"""Our stored form of an adapter: ``adapter.safetensors`` + ``manifest.json`` (docs/lora.md, "Stored form").

adapter.safetensors holds ``<component>.<path>.lora_A.weight`` / ``.lora_B.weight`` (the official accelerate key
names) in the adapter's dtype. manifest.json:
    {"format": "movakit-lora", "version": 1, "rank": int, "alpha": float, "targets": "accelerate" | "attention",
     "layers": int, "parameters": int, "base": "sha256:..." (targets.base_identity), "sha256": <of
     adapter.safetensors>, "notes": [str, ...]}
The same two objects sit in a folder on disk or under ``adapters/<tenant>/<name>/`` in the registry
(movakit.lora.registry).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from movakit.lora.adapter import AdapterError, LoraAdapter, rank_of
from movakit.lora.targets import TARGET_KINDS

WEIGHTS_NAME = "adapter.safetensors"
MANIFEST_NAME = "manifest.json"
FORMAT = "movakit-lora"
VERSION = 1
_A, _B = ".lora_A.weight", ".lora_B.weight"


def weights_bytes(adapter: LoraAdapter) -> bytes:
    tensors: dict[str, torch.Tensor] = {}
    for key in sorted(adapter.layers):
        a, b = adapter.layers[key]
        tensors[key + _A] = a.detach().cpu().contiguous()
        tensors[key + _B] = b.detach().cpu().contiguous()
    return save_safetensors(tensors)


def manifest_for(adapter: LoraAdapter, weights: bytes) -> dict:
    return {"format": FORMAT, "version": VERSION, "rank": adapter.rank, "alpha": adapter.alpha,
            "targets": adapter.targets, "layers": len(adapter.layers), "parameters": adapter.num_parameters(),
            "base": adapter.base, "sha256": hashlib.sha256(weights).hexdigest(), "notes": list(adapter.notes)}


def encode(adapter: LoraAdapter) -> tuple[bytes, bytes]:
    """(manifest.json bytes, adapter.safetensors bytes)."""
    weights = weights_bytes(adapter)
    return json.dumps(manifest_for(adapter, weights), indent=1).encode(), weights


def parse_manifest(data: bytes, where: str) -> dict:
    """The manifest as a dict, every field checked; AdapterError naming the field."""
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"{where}: not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise AdapterError(f"{where}: 'format' must be {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise AdapterError(f"{where}: 'version' {manifest.get('version')!r} is not supported (only {VERSION})")
    checks = {"rank": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
              "alpha": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
              "targets": lambda v: v in TARGET_KINDS, "base": lambda v: isinstance(v, str),
              "sha256": lambda v: isinstance(v, str) and len(v) == 64,
              "notes": lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v)}
    for name, ok in checks.items():
        if not ok(manifest.get(name)):
            raise AdapterError(f"{where}: field {name!r} is missing or invalid ({manifest.get(name)!r})")
    return manifest


def decode(manifest_data: bytes, weights: bytes, where: str) -> LoraAdapter:
    """An adapter from its two stored objects; the weights' sha256 and rank are checked against the manifest."""
    manifest = parse_manifest(manifest_data, f"{where}/{MANIFEST_NAME}")
    digest = hashlib.sha256(weights).hexdigest()
    if digest != manifest["sha256"]:
        raise AdapterError(f"{where}/{WEIGHTS_NAME}: sha256 {digest} does not match the manifest's "
                           f"{manifest['sha256']}")
    try:
        tensors = load_safetensors(weights)
    except (SafetensorError, ValueError) as exc:
        raise AdapterError(f"{where}/{WEIGHTS_NAME}: not a safetensors file ({exc})") from None
    layers = {}
    for key in tensors:
        if key.endswith(_A):
            layer = key[: -len(_A)]
            if layer + _B not in tensors:
                raise AdapterError(f"{where}/{WEIGHTS_NAME}: {layer!r} has lora_A but no lora_B")
            layers[layer] = (tensors[key], tensors[layer + _B])
        elif not (key.endswith(_B) and key[: -len(_B)] + _A in tensors):
            raise AdapterError(f"{where}/{WEIGHTS_NAME}: unexpected tensor {key!r}")
    if rank_of(layers) != manifest["rank"]:
        raise AdapterError(f"{where}/{MANIFEST_NAME}: rank {manifest['rank']} does not match the tensors' rank "
                           f"{rank_of(layers)}")
    return LoraAdapter(rank=manifest["rank"], alpha=float(manifest["alpha"]), targets=manifest["targets"],
                       layers=layers, notes=tuple(manifest["notes"]), base=manifest["base"])


def write_folder(adapter: LoraAdapter, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    manifest, weights = encode(adapter)
    (folder / WEIGHTS_NAME).write_bytes(weights)
    (folder / MANIFEST_NAME).write_bytes(manifest)
    return folder


def read_folder(folder: Path) -> LoraAdapter:
    return decode((folder / MANIFEST_NAME).read_bytes(), (folder / WEIGHTS_NAME).read_bytes(), str(folder))


def read_any(path: str | Path) -> LoraAdapter:
    """Our folder (manifest.json) or either official format (movakit.lora.official)."""
    from movakit.lora.official import read_official

    path = Path(path)
    if not path.exists():
        raise AdapterError(f"{path}: no such file or folder")
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        return read_folder(path)
    return read_official(path)
