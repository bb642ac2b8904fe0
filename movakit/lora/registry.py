"""The adapter registry in S3: ``adapters/<name>/manifest.json`` + ``adapters/<name>/adapter.safetensors``.

The weights are written first and the manifest last, so an adapter exists exactly when its manifest does; a
delete removes the manifest first. Everything read back is checked (manifest fields, the weights' sha256, rank).
"""

from __future__ import annotations

from movakit.lora.adapter import AdapterError, LoraAdapter
from movakit.request import LORA_NAME, LORA_NAME_RULE
from movakit.lora.store import MANIFEST_NAME, WEIGHTS_NAME, decode, parse_manifest

PREFIX = "adapters/"


class AdapterNotFound(LookupError):
    """No adapter of that name in the registry."""


class AdapterExists(Exception):
    """An adapter of that name is already stored (and replacing was not asked for)."""


def adapter_key(name: str, filename: str) -> str:
    return f"{PREFIX}{name}/{filename}"


def check_name(name: str, field: str = "name") -> None:
    if not LORA_NAME.match(name):
        raise AdapterError(f"{field}: {name!r} must be {LORA_NAME_RULE}")


class AdapterRegistry:
    """Adapters in one bucket of a movakit.runtime.object_store.ObjectStore."""

    def __init__(self, store) -> None:
        self.store = store

    def put(self, name: str, manifest: bytes, weights: bytes, *, replace: bool = False) -> dict:
        """Stores the adapter after checking it whole (AdapterError naming the field); returns the manifest."""
        check_name(name)
        decode(manifest, weights, f"adapter {name!r}")
        if not replace and self.store.has_key(adapter_key(name, MANIFEST_NAME)):
            raise AdapterExists(f"name: adapter {name!r} already exists (upload with replace to overwrite it)")
        self.store.put_bytes(adapter_key(name, WEIGHTS_NAME), weights)
        self.store.put_bytes(adapter_key(name, MANIFEST_NAME), manifest, "application/json")
        return parse_manifest(manifest, name)

    def manifest(self, name: str) -> dict:
        check_name(name)
        data = self.store.get_raw(adapter_key(name, MANIFEST_NAME))
        if data is None:
            raise AdapterNotFound(f"no adapter {name!r} in the registry")
        return parse_manifest(data, adapter_key(name, MANIFEST_NAME))

    def exists(self, name: str) -> bool:
        return LORA_NAME.match(name) is not None and self.store.has_key(adapter_key(name, MANIFEST_NAME))

    def names(self) -> list[str]:
        suffix = "/" + MANIFEST_NAME
        return [key[len(PREFIX): -len(suffix)] for key in self.store.list_keys(PREFIX) if key.endswith(suffix)]

    def load(self, name: str) -> LoraAdapter:
        """The adapter, its weights verified against the manifest's sha256."""
        check_name(name)
        manifest = self.store.get_raw(adapter_key(name, MANIFEST_NAME))
        if manifest is None:
            raise AdapterNotFound(f"no adapter {name!r} in the registry")
        weights = self.store.get_raw(adapter_key(name, WEIGHTS_NAME))
        if weights is None:
            raise AdapterError(f"adapter {name!r}: {WEIGHTS_NAME} is missing from the registry")
        return decode(manifest, weights, f"adapter {name!r}")

    def delete(self, name: str) -> None:
        check_name(name)
        if not self.store.has_key(adapter_key(name, MANIFEST_NAME)):
            raise AdapterNotFound(f"no adapter {name!r} in the registry")
        self.store.delete(adapter_key(name, MANIFEST_NAME))
        self.store.delete(adapter_key(name, WEIGHTS_NAME))

