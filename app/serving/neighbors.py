"""Nearest neighbours of request instances: embed them as /embed does, ask the model's index.

Loaded indexes live in a bounded LRU (IndexCache) beside the model cache; the index row is
read on every call, so an index deleted elsewhere answers 404, never from memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from anyio import to_thread

from app.db.session import get_sessionmaker
from app.db.tables import NeighborIndex
from app.ml import ann
from app.ml.ann import AnnIndex
from app.services import indexes
from app.serving.service import Serving
from app.storage import BlobStore


@dataclass(frozen=True)
class LoadedIndex:
    """A loaded graph with the ids and labels of its rows (None when the dataset had none)."""

    index: AnnIndex
    ids: np.ndarray | None
    labels: np.ndarray | None

    def answer(self, q: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
        """The k nearest rows of each query as {row, distance, id?, label?}, nearest first."""
        rows, distances = self.index.search(q, k)
        extra = [(name, values.tolist()) for name, values in (("id", self.ids),
                                                              ("label", self.labels))
                 if values is not None]
        out = []
        for found, far in zip(rows.tolist(), distances.tolist(), strict=True):
            hits = []
            for row, distance in zip(found, far, strict=True):
                if row < 0:  # fewer reachable rows than k
                    continue
                hit: dict[str, Any] = {"row": row, "distance": distance}
                hit.update((name, values[row]) for name, values in extra)
                hits.append(hit)
            out.append(hits)
        return out


class IndexCache:
    """Bounded LRU of loaded indexes; concurrent first calls to one index share its load."""

    def __init__(self, store: BlobStore, size: int) -> None:
        self.store, self.size = store, size
        self._items: OrderedDict[str, LoadedIndex] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def load(self, row: NeighborIndex) -> LoadedIndex:
        """The loaded index of a row, from memory or from the blob store."""
        with self._lock:
            gate = self._loading.setdefault(row.id, threading.Lock())
        with gate:
            with self._lock:
                if (entry := self._items.get(row.id)) is not None:
                    self._items.move_to_end(row.id)
                    return entry
            folder = self.store.require(row.blob_key, what=f"index {row.id}", field="index_id")
            ids, labels = ann.load_rows(folder)
            entry = LoadedIndex(AnnIndex.load(folder), ids, labels)
            with self._lock:
                self._items[row.id] = entry
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
                self._loading.pop(row.id, None)
        return entry

    def evict(self, index_id: str) -> None:
        """Forget an index (deleted)."""
        with self._lock:
            self._items.pop(index_id, None)

    def __len__(self) -> int:
        return len(self._items)


class Neighbors:
    """What POST /v1/models/{id}/neighbors calls: the model's serving and the index cache."""

    def __init__(self, serving: Serving, cache: IndexCache) -> None:
        self.serving, self.cache = serving, cache

    async def answer(self, *, project: str, model_id: str, instances: list[Any], k: int,
                     index_id: str | None) -> dict[str, Any]:
        """{neighbors: per instance [{row, distance, id?, label?}, …], index_id}."""
        row = await to_thread.run_sync(self._ready, project, model_id, index_id)
        vectors = await self.serving.embed_instances(project, model_id, instances)
        loaded = await to_thread.run_sync(self.cache.load, row)
        found = await self.serving.cache.pool.run(loaded.answer, vectors, k)
        return {"neighbors": found, "index_id": row.id}

    def _ready(self, project: str, model_id: str, index_id: str | None) -> NeighborIndex:
        with get_sessionmaker(self.serving.database_url)() as session:
            return indexes.ready(session=session, project=project, model_id=model_id,
                                 index_id=index_id)
