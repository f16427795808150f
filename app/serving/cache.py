"""The model cache: an LRU of loaded models in the API process, each with its micro-batchers."""

from __future__ import annotations

import gc
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from app.ml.base import Trained
from app.services import models
from app.serving.batcher import MicroBatcher
from app.serving.inputs import InputSpec
from app.serving.pool import ServingPool
from app.storage import BlobStore


def settle_heap(*, thaw: bool = False) -> None:
    """Collect, then exempt everything alive from future garbage collections (gc.freeze).

    The API process holds torch, scikit-learn, pandas and the loaded models: a few hundred
    thousand long-lived objects that every full collection walks again, ~0.2 s with the GIL held
    while every queued request waits (p99 over a second under load). Called once the app has
    started and after each model load. Frozen objects are still freed when nothing refers to
    them, but a frozen reference cycle is not: after an eviction, `thaw` first returns the frozen
    objects to the collector, so an evicted model's cycles go with this one full collection.
    """
    if thaw:
        gc.unfreeze()
    gc.collect()
    gc.freeze()


@dataclass
class Loaded:
    """A loaded model with the row facts needed to answer without touching the database."""

    model_id: str
    project: str
    algorithm: str
    capabilities: tuple[str, ...]
    spec: InputSpec
    trained: Trained
    checked_at: float
    batchers: dict[str, MicroBatcher] = field(default_factory=dict)

    @property
    def quick(self) -> bool:
        """A cheap call (scikit-learn): not worth a thread hop or a wait for company."""
        return not self.trained.batchable


class ModelCache:
    """Bounded LRU of loaded models; loads happen outside the lock so one slow load blocks nobody."""

    def __init__(self, store: BlobStore, size: int, *, batch_max_size: int = 64,
                 batch_max_wait: float = 0.002, pool: ServingPool | None = None,
                 inline: int = 0) -> None:
        self.store = store
        self.size = size
        self.batch_max_size = batch_max_size
        self.batch_max_wait = batch_max_wait
        self.pool = pool or ServingPool(2)
        self.inline = inline
        self._items: OrderedDict[str, Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.hits = 0
        self.misses = 0
        self._thaw_due = False

    def peek(self, model_id: str) -> Loaded | None:
        """The cached entry, marked recently used, or None."""
        with self._lock:
            entry = self._items.get(model_id)
            if entry is not None:
                self._items.move_to_end(model_id)
                self.hits += 1
            return entry

    def load(self, row: Any) -> Loaded:
        """Load the model of a database row and cache it; concurrent callers share one load.

        Without this, the first burst of requests to a cold model would each read and build it.
        """
        with self._lock:
            gate = self._loading.setdefault(row.id, threading.Lock())
        with gate:
            with self._lock:
                entry = self._items.get(row.id)
            if entry is not None and entry.project == row.project:
                return entry
            entry = self._build(row)
        with self._lock:
            self._loading.pop(row.id, None)
        return entry

    def _build(self, row: Any) -> Loaded:
        trained = models.load_trained(store=self.store, model_id=row.id,
                                      algorithm=row.algorithm, artifact_key=row.artifact_key)
        entry = Loaded(
            model_id=row.id, project=row.project, algorithm=row.algorithm,
            capabilities=tuple(row.capabilities), spec=InputSpec.of(dict(row.input_schema)),
            trained=trained,
            checked_at=time.monotonic(),
        )
        with self._lock:
            self.misses += 1
            self._items[row.id] = entry
            self._items.move_to_end(row.id)
            thaw, self._thaw_due = self._thaw_due or len(self._items) > self.size, False
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        settle_heap(thaw=thaw)  # the model's objects, and the modules its loading imported
        return entry

    def batcher(self, entry: Loaded, op: str) -> MicroBatcher:
        """The micro-batcher of one model's predict or embed (created on first use).

        A scikit-learn call is cheap next to its fixed cost (validation, thread-pool limits):
        its batches take what is already waiting, with no added wait, and run on the loop when
        small. Torch models wait up to batch_max_wait for company and always run in the pool.
        """
        if op not in entry.batchers:
            fn = getattr(entry.trained, op)
            quick = entry.quick
            entry.batchers[op] = MicroBatcher(
                fn, self.batch_max_size, 0.0 if quick else self.batch_max_wait, pool=self.pool,
                inline=self.inline if quick else 0)
        return entry.batchers[op]

    def evict(self, model_id: str) -> None:
        """Forget a model (deleted)."""
        with self._lock:
            if self._items.pop(model_id, None) is not None:
                self._thaw_due = True  # its frozen cycles go at the next load's collection

    def __len__(self) -> int:
        return len(self._items)
