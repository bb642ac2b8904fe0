"""The adapter registry in S3, one namespace per tenant:
``adapters/<tenant>/<name>/manifest.json`` + ``adapters/<tenant>/<name>/adapter.safetensors``.

Every call names the tenant (the gateway passes the caller's, from its bearer token; the denoiser the job's; the
trainer the tenant it trains for), so one tenant never reads, lists, replaces or deletes another's adapter, and two
tenants may use the same name. The weights are written first and the manifest last, so an adapter exists exactly
when its manifest does; a delete removes the manifest first. Everything read back is checked (manifest fields, the
weights' sha256, rank).
"""

from __future__ import annotations

from movakit.lora.adapter import AdapterError, LoraAdapter
from movakit.lora.store import MANIFEST_NAME, WEIGHTS_NAME, decode, parse_manifest
from movakit.request import LORA_NAME, LORA_NAME_RULE
from movakit.runtime.auth import valid_tenant

PREFIX = "adapters/"


class AdapterNotFound(LookupError):
    """No adapter of that name in the tenant's registry."""


class AdapterExists(Exception):
    """The tenant already has an adapter of that name (and replacing was not asked for)."""


def check_tenant(tenant: str) -> None:
    if not valid_tenant(tenant):
        raise AdapterError(f"tenant: {tenant!r} is not a tenant name")


def check_name(name: str, field: str = "name") -> None:
    if not LORA_NAME.match(name):
        raise AdapterError(f"{field}: {name!r} must be {LORA_NAME_RULE}")


def tenant_prefix(tenant: str) -> str:
    check_tenant(tenant)
    return f"{PREFIX}{tenant}/"


def adapter_key(tenant: str, name: str, filename: str) -> str:
    return f"{tenant_prefix(tenant)}{name}/{filename}"


class AdapterRegistry:
    """Adapters in one bucket of a movakit.runtime.object_store.ObjectStore, per tenant."""

    def __init__(self, store) -> None:
        self.store = store

    def put(self, tenant: str, name: str, manifest: bytes, weights: bytes, *, replace: bool = False) -> dict:
        """Stores the adapter as `tenant`'s `name` after checking it whole (AdapterError naming the field); returns
        the manifest. `manifest, weights` are what movakit.lora.store.encode(adapter) returns."""
        check_tenant(tenant)
        check_name(name)
        decode(manifest, weights, f"adapter {name!r}")
        if not replace and self.store.has_key(adapter_key(tenant, name, MANIFEST_NAME)):
            raise AdapterExists(f"name: adapter {name!r} already exists (upload with replace to overwrite it)")
        self.store.put_bytes(adapter_key(tenant, name, WEIGHTS_NAME), weights)
        self.store.put_bytes(adapter_key(tenant, name, MANIFEST_NAME), manifest, "application/json")
        return parse_manifest(manifest, name)

    def manifest_bytes(self, tenant: str, name: str) -> bytes:
        check_tenant(tenant)
        check_name(name)
        data = self.store.get_raw(adapter_key(tenant, name, MANIFEST_NAME))
        if data is None:
            raise AdapterNotFound(f"no adapter {name!r} in the registry")
        return data

    def manifest(self, tenant: str, name: str) -> dict:
        return parse_manifest(self.manifest_bytes(tenant, name), adapter_key(tenant, name, MANIFEST_NAME))

    def exists(self, tenant: str, name: str) -> bool:
        return (valid_tenant(tenant) and LORA_NAME.match(name) is not None
                and self.store.has_key(adapter_key(tenant, name, MANIFEST_NAME)))

    def names(self, tenant: str) -> list[str]:
        prefix, suffix = tenant_prefix(tenant), "/" + MANIFEST_NAME
        return [key[len(prefix): -len(suffix)] for key in self.store.list_keys(prefix)
                if key.endswith(suffix) and "/" not in key[len(prefix): -len(suffix)]]

    def weights_key(self, tenant: str, name: str) -> str:
        check_name(name)
        return adapter_key(tenant, name, WEIGHTS_NAME)

    def load(self, tenant: str, name: str) -> LoraAdapter:
        """The adapter, its weights verified against the manifest's sha256."""
        manifest = self.manifest_bytes(tenant, name)
        weights = self.store.get_raw(adapter_key(tenant, name, WEIGHTS_NAME))
        if weights is None:
            raise AdapterError(f"adapter {name!r}: {WEIGHTS_NAME} is missing from the registry")
        return decode(manifest, weights, f"adapter {name!r}")

    def delete(self, tenant: str, name: str) -> None:
        check_tenant(tenant)
        check_name(name)
        if not self.store.has_key(adapter_key(tenant, name, MANIFEST_NAME)):
            raise AdapterNotFound(f"no adapter {name!r} in the registry")
        self.store.delete(adapter_key(tenant, name, MANIFEST_NAME))
        self.store.delete(adapter_key(tenant, name, WEIGHTS_NAME))
