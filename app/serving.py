"""Serving: an LRU cache of loaded models in the API process, so requests never reload them."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from app.ml import registry
from app.ml.base import Trained
from app.storage import BlobStore


@dataclass
class Loaded:
    """A loaded model with the row facts needed to answer without touching the database."""

    model_id: str
    project: str
    algorithm: str
    capabilities: tuple[str, ...]
    features: list[str]
    dtype: str
    trained: Trained
    checked_at: float


class ModelCache:
    """Bounded LRU of loaded models; loads happen outside the lock so one slow load blocks nobody."""

    def __init__(self, store: BlobStore, size: int) -> None:
        self.store = store
        self.size = size
        self._items: OrderedDict[str, Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def peek(self, model_id: str) -> Loaded | None:
        """The cached entry, marked recently used, or None."""
        with self._lock:
            entry = self._items.get(model_id)
            if entry is not None:
                self._items.move_to_end(model_id)
                self.hits += 1
            return entry

    def load(self, row: Any) -> Loaded:
        """Load the model of a database row and cache it."""
        trained = registry.load_trained(row.algorithm, self.store.path(row.artifact_key))
        entry = Loaded(
            model_id=row.id, project=row.project, algorithm=row.algorithm,
            capabilities=tuple(row.capabilities),
            features=[f["name"] for f in row.input_schema["features"]],
            dtype=row.input_schema.get("dtype", "float64"), trained=trained,
            checked_at=time.monotonic(),
        )
        with self._lock:
            self.misses += 1
            self._items[row.id] = entry
            self._items.move_to_end(row.id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return entry

    def evict(self, model_id: str) -> None:
        """Forget a model (deleted)."""
        with self._lock:
            self._items.pop(model_id, None)

    def __len__(self) -> int:
        return len(self._items)
