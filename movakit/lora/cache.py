"""The denoiser's adapters: one copy of the base weights, each task's adapter applied to that task only.

`AdapterCache.use(tenant, name, scale)` is the context every denoise runs in. It holds one lock for the whole run,
so no two runs of one process share the models at the same time (with or without an adapter), loads the named
adapter from the job's tenant's registry (registry -> checks against this model -> LRU of at most `capacity`
adapters, keyed by tenant, name and sha256, so a replaced adapter is read again and tenants never share an entry)
and attaches it unmerged; on exit the base model is as it was, also on errors. A resumed task reads its adapter
again from its own params and tenant, so a crash never carries one job's adapter into another's.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from movakit.lora.adapter import AdapterError, LoraAdapter, applied, check_base, check_fits
from movakit.lora.registry import AdapterNotFound, AdapterRegistry
from movakit.lora.targets import components_of, identity_of


class AdapterCache:
    def __init__(self, models, registry: AdapterRegistry, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"adapter cache capacity must be >= 0, got {capacity}")
        self.models = models
        self.registry = registry
        self.capacity = capacity
        self.identity = identity_of(models)
        self._cached: OrderedDict[tuple[str, str, str], LoraAdapter] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # adapters read from the registry (cache misses), for logs and tests

    def get(self, tenant: str, name: str) -> LoraAdapter:
        """`tenant`'s adapter `name`, checked against this model; ValueError naming params.lora.name otherwise
        (also when the tenant has no adapter of that name, whoever else does)."""
        field = "params.lora.name"
        try:
            sha = self.registry.manifest(tenant, name)["sha256"]
            key = (tenant, name, sha)
            adapter = self._cached.get(key)
            if adapter is not None:
                self._cached.move_to_end(key)
                return adapter
            adapter = self.registry.load(tenant, name)
            check_base(adapter, self.identity)
            check_fits(adapter, components_of(self.models))
        except (AdapterNotFound, AdapterError) as exc:
            raise ValueError(f"{field}: {exc}") from None
        self.loads += 1
        if self.capacity:
            self._cached[key] = adapter
            while len(self._cached) > self.capacity:
                self._cached.popitem(last=False)
        return adapter

    def cached_names(self) -> list[tuple[str, str]]:
        """(tenant, name) in the cache, least recently used first."""
        return [(tenant, name) for tenant, name, _sha in self._cached]

    @contextmanager
    def use(self, tenant: str, name: str, scale: float) -> Iterator[LoraAdapter | None]:
        """The block runs with ``tenant``'s adapter ``name`` at ``scale`` (no adapter for ""), alone on the models."""
        with self._lock:
            adapter = self.get(tenant, name) if name else None
            with applied(self.models, adapter, scale):
                yield adapter
