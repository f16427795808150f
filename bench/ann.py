"""Approximate nearest neighbours on 100,000 × 384 clustered unit vectors: which library, and
how far ahead of exact search it runs.

The data look like sentence embeddings (MiniLM: 384 dimensions, unit length, in topics):
1,000 random topic centres, each row a centre plus Gaussian noise, normalised. Queries are
1,000 more rows from the same topics, not in the index. Exact search is what a user would
write without a library: one matrix product and `argpartition`, in NumPy, on the same cores.

Each candidate (hnswlib, usearch, faiss-cpu's HNSW; those not installed are skipped) builds
an HNSW graph with the same M and ef_construction, and is queried with the same ef_search.
Reported per library: build seconds, recall@10 against exact search, queries/s one query at a
time (batch 1) and in batches of 100, and exact NumPy's at the same batch size measured in
alternating rounds beside it (the machine is shared: both sides see the same load); the
ratio is the library's queries/s over exact's, from the median of the rounds. The goal (issue 16): recall@10
>= 0.95 and >= 20x exact queries/s, for the library the service uses (`app.ml.ann`).

`python -m bench ann` runs it; BENCH_ANN_ROWS shrinks it (e.g. 5000) to check the code, and
BENCH_ANN_LIBS picks candidates (e.g. "service" alone: the goal, without the comparison).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from app.ml.ann import IndexParams, build

ROWS = int(os.environ.get("BENCH_ANN_ROWS", "100000"))
DIM, TOPICS, QUERIES, K = 384, 1000, 1000, 10
BATCH = 100
# Same graph for every library: M links per node, ef_construction while building,
# ef_search while querying: the service's defaults.
M, EF_CONSTRUCTION, EF_SEARCH = IndexParams().m, IndexParams().ef_construction, \
    IndexParams().ef_search
GOAL_RECALL, GOAL_RATIO = 0.95, 20.0
LIBS = os.environ.get("BENCH_ANN_LIBS", "hnswlib,usearch,faiss,service").split(",")

Search = Callable[[np.ndarray], np.ndarray]  # queries -> (n, K) row numbers


def clustered_unit_vectors(n: int, seed: int) -> np.ndarray:
    """Rows drawn around shared topic centres, normalised to unit length (float32)."""
    centres = np.random.default_rng(1234).normal(size=(TOPICS, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    # Noise as large as the centre along each axis would hide the topics; 0.6 keeps them
    # visible but leaves many near-ties inside a topic, which is what makes recall hard.
    x = centres[rng.integers(0, TOPICS, size=n)] + 0.6 * rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact(data: np.ndarray) -> Search:
    """Exact cosine top-K: a matrix product and argpartition, sorted."""

    def search(q: np.ndarray) -> np.ndarray:
        sims = q @ data.T
        top = np.argpartition(-sims, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        return np.take_along_axis(top, order, axis=1)

    return search


def build_hnswlib(data: np.ndarray) -> Search:
    import hnswlib

    index = hnswlib.Index(space="cosine", dim=DIM)
    index.init_index(max_elements=len(data), M=M, ef_construction=EF_CONSTRUCTION)
    index.add_items(data, np.arange(len(data)))
    index.set_ef(EF_SEARCH)
    return lambda q: index.knn_query(q, k=K)[0]


def build_usearch(data: np.ndarray) -> Search:
    from usearch.index import Index

    index = Index(ndim=DIM, metric="cos", dtype="f32", connectivity=M,
                  expansion_add=EF_CONSTRUCTION, expansion_search=EF_SEARCH)
    index.add(np.arange(len(data)), data)

    def search(q: np.ndarray) -> np.ndarray:
        return np.asarray(index.search(q, K).keys).reshape(len(q), K)

    return search


def build_faiss(data: np.ndarray) -> Search:
    import faiss

    index = faiss.IndexHNSWFlat(DIM, M, faiss.METRIC_INNER_PRODUCT)  # unit rows: IP = cosine
    index.hnsw.efConstruction = EF_CONSTRUCTION
    index.add(data)
    index.hnsw.efSearch = EF_SEARCH
    return lambda q: index.search(q, K)[1]


def build_service(data: np.ndarray) -> Search:
    """The service's own wrapper (app.ml.ann), to show its overhead is nothing."""
    index = build(data, metric="cosine", params=IndexParams(m=M, ef_construction=EF_CONSTRUCTION,
                                                            ef_search=EF_SEARCH))
    return lambda q: index.search(q, K)[0]


CANDIDATES: dict[str, Callable[[np.ndarray], Search]] = {
    "hnswlib": build_hnswlib, "usearch": build_usearch, "faiss": build_faiss,
    "service": build_service,
}


ROUNDS = 3  # exact and library alternate this many times; each ratio is the median round's


def queries_per_s(search: Search, queries: np.ndarray, batch: int) -> float:
    """Queries answered per second, `batch` queries per call, over the queries."""
    search(queries[:batch])  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(queries), batch):
        search(queries[i:i + batch])
    return len(queries) / (time.perf_counter() - t0)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the true K nearest that the search found."""
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def versus_exact(search: Search, exact_search: Search, queries: np.ndarray,
                 batch: int) -> tuple[float, float, float]:
    """(library q/s, exact q/s, ratio) at one batch size, in alternating rounds so that both
    sides see the same load on a shared machine; the round with the median ratio."""
    # Exact search is slow one query at a time: fewer queries keep a round short.
    few = queries[:50] if batch == 1 else queries[:500]
    rounds = []
    for _ in range(ROUNDS):
        base = queries_per_s(exact_search, few, batch)
        qps = queries_per_s(search, queries, batch)
        rounds.append((qps, base, qps / base))
    return sorted(rounds, key=lambda r: r[2])[ROUNDS // 2]


def measure(name: str, build: Callable[[np.ndarray], Search], data: np.ndarray,
            queries: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """One library's build time, recall@K and queries/s, each beside exact's."""
    t0 = time.perf_counter()
    try:
        search = build(data)
    except ImportError:
        return {"skipped": "not installed"}
    built = time.perf_counter() - t0
    row: dict[str, Any] = {"build_s": round(built, 1),
                           "recall@10": round(recall(search(queries), truth), 4)}
    for label, batch in (("single", 1), ("batch", BATCH)):
        qps, base, ratio = versus_exact(search, exact(data), queries, batch)
        row.update({f"{label}_qps": round(qps), f"exact_{label}_qps": round(base, 1),
                    f"{label}_ratio": round(ratio, 1)})
    print(f"{name:8s} build {built:5.1f} s  recall@10 {row['recall@10']:.4f}  "
          f"1-query {row['single_qps']:>6,} vs exact {row['exact_single_qps']:,} q/s "
          f"({row['single_ratio']}x)  batch {BATCH} {row['batch_qps']:>6,} vs exact "
          f"{row['exact_batch_qps']:,} q/s ({row['batch_ratio']}x)")
    return row


def run() -> dict[str, Any]:
    """Every installed candidate against exact NumPy; the goal judged on the service's own."""
    data = clustered_unit_vectors(ROWS, seed=0)
    queries = clustered_unit_vectors(QUERIES, seed=1)
    truth = exact(data)(queries)
    print(f"{ROWS:,} x {DIM} clustered unit vectors, {QUERIES} queries, k={K}, M={M}, "
          f"ef_construction={EF_CONSTRUCTION}, ef_search={EF_SEARCH}, {os.cpu_count()} cores")
    result: dict[str, Any] = {"rows": ROWS, "dim": DIM, "k": K, "batch": BATCH}
    for name in LIBS:
        result[name] = measure(name, CANDIDATES[name], data, queries, truth)
    ours = result.get("service", {})
    result["goal"] = f"recall@10 >= {GOAL_RECALL} and >= {GOAL_RATIO:.0f}x exact q/s"
    result["goal_met"] = bool(ours and ours["recall@10"] >= GOAL_RECALL
                              and min(ours["single_ratio"], ours["batch_ratio"]) >= GOAL_RATIO)
    return result


if __name__ == "__main__":
    run()
