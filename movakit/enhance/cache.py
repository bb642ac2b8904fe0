"""An in-memory LRU cache of validated LLM captions, keyed by (backend, model, prompt, image hash)."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(frozen=True)
class CacheKey:
    """What makes two enhancement requests give the same caption."""

    backend: str
    model: str
    prompt: str
    image_sha256: str  # "" when no image was given

    @classmethod
    def of(cls, backend: str, model: str, prompt: str, image: bytes | None) -> CacheKey:
        digest = hashlib.sha256(image).hexdigest() if image is not None else ""
        return cls(backend=backend, model=model, prompt=prompt, image_sha256=digest)


class LRUCache(Generic[V]):
    """A thread-safe least-recently-used map holding at most `capacity` entries (0 keeps nothing)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity: {capacity} must be >= 0")
        self.capacity = capacity
        self._items: OrderedDict[CacheKey, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: CacheKey) -> V | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: CacheKey, value: V) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
