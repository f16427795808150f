"""Approximate nearest-neighbour search over embeddings: an HNSW graph (faiss-cpu).

Why faiss: `python -m bench ann` measured hnswlib, usearch and faiss-cpu's HNSW on 100,000 ×
384 clustered unit vectors with the same graph (M=16, ef_construction=100, ef_search=64) on
2 cores: faiss and hnswlib tie (recall@10 0.999, ~28 s to build, 4,400-4,800 queries/s one
at a time), usearch built 2.6x slower and answered half as fast; and faiss ships wheels
while hnswlib compiles from source at install. Everything faiss-specific is
in this module: the rest of the service sees `build`, `AnnIndex.search`, `save` and `load`.

Distances are what a user expects of the metric: cosine = 1 - cosine similarity (0 for the
same direction, 2 for opposite), l2 = Euclidean distance (not its square, as faiss keeps it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Metric = Literal["cosine", "l2"]
METRICS: tuple[Metric, ...] = ("cosine", "l2")
INDEX_FILE = "hnsw.faiss"
META_FILE = "index.json"


class IndexParams(BaseModel):
    """How the HNSW graph is built and searched: bigger is more exact and slower."""

    model_config = ConfigDict(extra="forbid")

    # 16 links per node: the usual HNSW default.
    m: int = Field(16, ge=4, le=64, description="HNSW M: links per node (memory ~ 4·M bytes "
                   "per row more; higher is more exact)")
    # 100: builds 100,000 × 384 in ~30 s on 2 cores; 200 costs twice that for little recall.
    ef_construction: int = Field(100, ge=8, le=800, description="candidates kept while "
                                 "building (higher: a better graph, a slower build)")
    # 32: recall@10 0.996 on the bench's data (64: 0.999 at half the batched queries/s; 16:
    # 0.957, too close to the 0.95 floor for data less tidy than the bench's).
    ef_search: int = Field(32, ge=8, le=2000, description="candidates kept while searching "
                           "(raised to k when k is larger; higher: more exact, slower)")


@dataclass(frozen=True)
class Facts:
    """What the stored index says about itself."""

    metric: Metric
    dim: int
    n_rows: int
    params: IndexParams


def _faiss() -> Any:
    # Imported on first use: the API process starts without it, and a forked worker child
    # starts its OpenMP threads itself instead of inheriting the parent's.
    import faiss

    return faiss


def _unit(x: np.ndarray) -> np.ndarray:
    """A float32 copy of the rows scaled to unit length (a zero row stays zero: it is no
    direction). faiss's own loop: NumPy's norm-and-divide costs a tenth of a query."""
    unit = np.array(x, dtype=np.float32, copy=True, order="C")
    _faiss().normalize_L2(unit)
    return unit


class AnnIndex:
    """An HNSW index over row vectors; rows are numbered in the order they were added."""

    def __init__(self, index: Any, metric: Metric, params: IndexParams) -> None:
        self._index, self.metric, self.params = index, metric, params
        self._ef: dict[int, Any] = {}  # search parameters by ef_search, made once each

    @classmethod
    def empty(cls, dim: int, *, metric: Metric, params: IndexParams) -> AnnIndex:
        """A new index for vectors of dim floats."""
        faiss = _faiss()
        # On unit vectors the inner product is the cosine similarity.
        space = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        index = faiss.IndexHNSWFlat(dim, params.m, space)
        index.hnsw.efConstruction = params.ef_construction
        return cls(index, metric, params)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def _prepared(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"vectors of {self.dim} floats expected, got shape {x.shape}")
        return _unit(x) if self.metric == "cosine" else x

    def add(self, x: np.ndarray) -> None:
        """Add rows (numbered after those already in)."""
        self._index.add(self._prepared(x))

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, distances) of the k nearest rows of each query, nearest first; k is cut to
        the index's size."""
        k = max(1, min(k, len(self)))
        scores, rows = self._index.search(self._prepared(q), k, params=self._search_params(k))
        if self.metric == "cosine":
            distances = 1.0 - scores
        else:
            distances = np.sqrt(np.maximum(scores, 0.0))
        return rows.astype(np.int64), distances.astype(np.float32)

    def _search_params(self, k: int) -> Any:
        """ef_search for a call, passed with it rather than set on the index: concurrent
        requests share one loaded index. Kept per ef: making the object costs tens of µs, a
        fair part of a ~0.1 ms query."""
        ef = max(self.params.ef_search, k)
        if ef not in self._ef:
            self._ef[ef] = _faiss().SearchParametersHNSW(efSearch=ef)
        return self._ef[ef]

    def save(self, directory: Path) -> None:
        """Write the graph and its facts into an existing directory."""
        _faiss().write_index(self._index, str(directory / INDEX_FILE))
        facts = {"metric": self.metric, "dim": self.dim, "n_rows": len(self),
                 "params": self.params.model_dump(), "library": "faiss-cpu"}
        (directory / META_FILE).write_text(json.dumps(facts, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> AnnIndex:
        """The index save() wrote (a faiss file this service wrote itself, never a user's)."""
        facts = read_facts(directory)
        index = _faiss().read_index(str(directory / INDEX_FILE))
        return cls(index, facts.metric, facts.params)


def read_facts(directory: Path) -> Facts:
    """The metric, size and params of a saved index, without loading its graph."""
    raw = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    metric = raw["metric"]
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} in {directory / META_FILE}")
    return Facts(metric=metric, dim=int(raw["dim"]), n_rows=int(raw["n_rows"]),
                 params=IndexParams.model_validate(raw["params"]))


def build(x: np.ndarray, *, metric: Metric, params: IndexParams) -> AnnIndex:
    """An index of the rows of x, in one call (the bench; the worker adds chunk by chunk)."""
    index = AnnIndex.empty(int(x.shape[1]), metric=metric, params=params)
    index.add(x)
    return index


IDS_FILE, LABELS_FILE = "ids.npy", "labels.npy"


def _storable(values: np.ndarray) -> np.ndarray:
    """Values that np.save writes without pickling: numbers as they are, the rest as text."""
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        return arr
    return np.array(["" if v is None else str(v) for v in arr.tolist()], dtype=str)


def save_rows(directory: Path, *, ids: np.ndarray | None, labels: np.ndarray | None) -> None:
    """Keep the indexed rows' ids and labels beside the graph (row i of each = row i added)."""
    for name, values in ((IDS_FILE, ids), (LABELS_FILE, labels)):
        if values is not None:
            np.save(directory / name, _storable(values), allow_pickle=False)


def load_rows(directory: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The (ids, labels) save_rows kept, each None when the dataset had none."""
    out = []
    for name in (IDS_FILE, LABELS_FILE):
        path = directory / name
        out.append(np.load(path, allow_pickle=False) if path.is_file() else None)
    return out[0], out[1]
