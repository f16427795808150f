"""DBSCAN (scikit-learn), with new points labelled by their nearest core sample."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator
from sklearn.cluster import DBSCAN
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from app.ml.base import PREDICT
from app.ml.unsupervised._common import (
    UnsupervisedAlgorithm,
    UnsupervisedModel,
    UnsupervisedParams,
    cluster_scores,
)

NOISE = -1
Metric = Literal["euclidean", "manhattan", "cosine", "chebyshev"]


class DBSCANParams(UnsupervisedParams):
    """Params of dbscan."""

    eps: float = Field(0.5, gt=0, le=1e12, description="Neighbourhood radius: two rows closer "
                       "than this (in `metric`) are neighbours. The most important setting; "
                       "it depends on the scale of the data (see `standardize`).")
    min_samples: int = Field(5, ge=1, le=100_000, description="Rows (the row itself included) "
                             "within eps that make a row a core sample.")
    metric: Metric = Field("euclidean", description="Distance between rows.")
    algorithm: Literal["auto", "ball_tree", "kd_tree", "brute"] = Field(
        "auto", description="Neighbour search; 'cosine' needs 'auto' or 'brute'.")
    leaf_size: int = Field(30, ge=1, le=10_000,
                           description="Leaf size of the ball/kd tree (speed and memory only).")

    @model_validator(mode="after")
    def _tree_supports_metric(self) -> DBSCANParams:
        if self.metric == "cosine" and self.algorithm in ("ball_tree", "kd_tree"):
            raise ValueError(f"metric 'cosine' needs algorithm 'auto' or 'brute', "
                             f"not {self.algorithm!r}")
        return self


class DBSCANModel(UnsupervisedModel):
    """A fitted dbscan: a new row takes the label of its nearest core sample within eps."""

    algorithm: ClassVar[str] = "dbscan"
    predicts_clusters: ClassVar[bool] = True
    clusters: ClassVar[bool] = True
    parts: ClassVar[dict[str, type]] = {"core_samples": np.ndarray, "core_labels": np.ndarray}
    row_exact: ClassVar[frozenset[str]] = frozenset({"predict"})  # labels only

    def __init__(self, *, meta: dict[str, Any], scaler: StandardScaler | None = None,
                 core_samples: np.ndarray, core_labels: np.ndarray) -> None:
        super().__init__(meta=meta, scaler=scaler)
        self.core_samples = core_samples
        self.core_labels = core_labels.astype(np.int64, copy=False)
        self.eps = float(self.params["eps"])
        self._index = self._neighbours()

    def _neighbours(self) -> NearestNeighbors | None:
        if len(self.core_samples) == 0:
            return None  # every training row was noise: every new row is noise too
        return NearestNeighbors(n_neighbors=1, metric=self.params["metric"]).fit(self.core_samples)

    def predict(self, x: np.ndarray) -> dict[str, Any]:
        """{"predictions": cluster label of each row, -1 for noise}."""
        rows = self.rows(x)
        labels = np.full(len(rows), NOISE, dtype=np.int64)
        if self._index is not None:
            dist, idx = self._index.kneighbors(rows)
            # <= as DBSCAN itself: a row exactly eps away is in the core sample's neighbourhood.
            near = dist[:, 0] <= self.eps
            labels[near] = self.core_labels[idx[near, 0]]
        return {"predictions": labels.tolist()}


class DBSCANAlgorithm(UnsupervisedAlgorithm[DBSCANParams]):
    """dbscan: scikit-learn's DBSCAN."""

    name: ClassVar[str] = "dbscan"
    sweep_metrics: ClassVar[tuple[str, ...]] = ("silhouette", "davies_bouldin", "calinski_harabasz",
                                                  "n_clusters", "noise_fraction")
    capabilities: ClassVar[tuple[str, ...]] = (PREDICT,)
    description: ClassVar[str] = (
        "Density-based clustering (scikit-learn DBSCAN): clusters are dense regions of rows, "
        "their number is found, and rows in sparse regions are noise (label -1). predict labels "
        "a new row with the cluster of its nearest core sample if that is within eps, else -1. "
        "Metrics: n_clusters, noise fraction, and silhouette, Davies-Bouldin and "
        "Calinski-Harabasz on the non-noise rows.")
    params_model: ClassVar[type[DBSCANParams]] = DBSCANParams
    trained_cls: ClassVar[type[DBSCANModel]] = DBSCANModel

    def fit_estimator(self, xs: np.ndarray, params: DBSCANParams) -> DBSCAN:
        return DBSCAN(eps=params.eps, min_samples=params.min_samples, metric=params.metric,
                      algorithm=params.algorithm, leaf_size=params.leaf_size).fit(xs)

    def score(self, xs: np.ndarray, params: DBSCANParams, fitted: DBSCAN) -> dict[str, Any]:
        labels = fitted.labels_
        clustered = labels != NOISE
        n_noise = int((~clustered).sum())
        return {
            "n_clusters": len(np.unique(labels[clustered])),
            "n_noise": n_noise,
            "noise_fraction": n_noise / len(labels),
            **cluster_scores(xs[clustered], labels[clustered], metric=params.metric),
        }

    def assignments(self, xs: np.ndarray, params: DBSCANParams, fitted: DBSCAN) -> np.ndarray:
        return np.asarray(fitted.labels_)

    def keep(self, xs: np.ndarray, params: DBSCANParams, fitted: DBSCAN) -> dict[str, Any]:
        core = fitted.core_sample_indices_
        return {"core_samples": np.ascontiguousarray(xs[core]),
                "core_labels": fitted.labels_[core].astype(np.int64)}
