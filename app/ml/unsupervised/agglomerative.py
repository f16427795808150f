"""Agglomerative (hierarchical) clustering, answering new rows by the nearest cluster centroid."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import pairwise_distances
from sklearn.preprocessing import StandardScaler

from app.ml.base import EMBED, PREDICT
from app.ml.unsupervised._common import (
    DATASET,
    UnsupervisedAlgorithm,
    UnsupervisedModel,
    UnsupervisedParams,
    cluster_scores,
    too_many,
)

# scikit-learn builds an O(n²) distance structure: 20 000 rows is already ~3 GB of float64.
MAX_ROWS = 20_000


class AgglomerativeParams(UnsupervisedParams):
    """Params of agglomerative."""

    n_clusters: int = Field(2, ge=1, le=10_000, description="Number of clusters to cut the "
                            "merge tree into. Must not exceed the number of training rows.")
    linkage: Literal["ward", "complete", "average", "single"] = Field(
        "ward", description="Which clusters merge next: 'ward' the pair whose merge least "
        "increases the within-cluster variance (euclidean only); 'complete', 'average', "
        "'single' the pair with the smallest maximum, mean or minimum distance between rows.")
    metric: Literal["euclidean", "manhattan", "cosine"] = Field(
        "euclidean", description="Distance between rows; also used to find the nearest "
        "centroid at predict/embed. 'ward' needs 'euclidean'.")

    @model_validator(mode="after")
    def _ward_is_euclidean(self) -> AgglomerativeParams:
        if self.linkage == "ward" and self.metric != "euclidean":
            raise ValueError(f"linkage 'ward' needs metric 'euclidean', not {self.metric!r}")
        return self


class AgglomerativeModel(UnsupervisedModel):
    """A fitted agglomerative clustering, answering through its clusters' centroids."""

    algorithm: ClassVar[str] = "agglomerative"
    predicts_clusters: ClassVar[bool] = True
    clusters: ClassVar[bool] = True
    parts: ClassVar[dict[str, type]] = {"centroids": np.ndarray}
    row_exact: ClassVar[frozenset[str]] = frozenset({"predict"})  # labels only

    def __init__(self, *, meta: dict[str, Any], scaler: StandardScaler | None = None,
                 centroids: np.ndarray) -> None:
        super().__init__(meta=meta, scaler=scaler)
        self.centroids = centroids

    def _distances(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(pairwise_distances(self.rows(x), self.centroids,
                                             metric=self.params["metric"]))

    def predict(self, x: np.ndarray) -> dict[str, Any]:
        """{"predictions": the cluster whose centroid is nearest to each row}."""
        return {"predictions": self._distances(x).argmin(axis=1).tolist()}

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Distance (in the trained metric) of each row to each cluster centroid."""
        return self._distances(x)


def centroids_of(xs: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Mean of the rows of each cluster, cluster c in row c."""
    return np.stack([xs[labels == c].mean(axis=0) for c in range(n_clusters)]).astype(xs.dtype)


class AgglomerativeAlgorithm(UnsupervisedAlgorithm[AgglomerativeParams]):
    """agglomerative: scikit-learn's AgglomerativeClustering."""

    name: ClassVar[str] = "agglomerative"
    sweep_metrics: ClassVar[tuple[str, ...]] = ("silhouette", "davies_bouldin", "calinski_harabasz")
    capabilities: ClassVar[tuple[str, ...]] = (PREDICT, EMBED)
    description: ClassVar[str] = (
        "Hierarchical agglomerative clustering (scikit-learn AgglomerativeClustering): starts "
        "with one cluster per row and merges the closest pair until n_clusters remain. "
        "scikit-learn cannot place new rows, so predict gives the cluster whose centroid (the "
        f"mean of its training rows) is nearest, and embed the distances to every centroid. "
        f"Memory grows with the square of the rows: at most {MAX_ROWS} training rows.")
    params_model: ClassVar[type[AgglomerativeParams]] = AgglomerativeParams
    trained_cls: ClassVar[type[AgglomerativeModel]] = AgglomerativeModel

    def problems(self, params: AgglomerativeParams, *, n_rows: int,
                 n_features: int) -> list[tuple[str, str]]:
        found = too_many("n_clusters", params.n_clusters, n_rows)
        if n_rows > MAX_ROWS:
            found.append((DATASET, (f"agglomerative clustering needs memory that grows with "
                          f"the square of the rows: at most {MAX_ROWS} training rows, got "
                          f"{n_rows}; use kmeans or minibatch_kmeans, or a sample")))
        if n_rows < 2:
            found.append((DATASET, "agglomerative clustering needs at least 2 training rows"))
        return found

    def fit_estimator(self, xs: np.ndarray, params: AgglomerativeParams) -> AgglomerativeClustering:
        return AgglomerativeClustering(n_clusters=params.n_clusters, linkage=params.linkage,
                                       metric=params.metric).fit(xs)

    def score(self, xs: np.ndarray, params: AgglomerativeParams,
              fitted: AgglomerativeClustering) -> dict[str, Any]:
        labels = fitted.labels_
        return {**cluster_scores(xs, labels, metric=params.metric),
                "n_clusters": len(np.unique(labels))}

    def assignments(self, xs: np.ndarray, params: AgglomerativeParams,
                    fitted: AgglomerativeClustering) -> np.ndarray:
        return np.asarray(fitted.labels_)

    def keep(self, xs: np.ndarray, params: AgglomerativeParams,
             fitted: AgglomerativeClustering) -> dict[str, Any]:
        return {"centroids": centroids_of(xs, fitted.labels_, int(fitted.n_clusters_))}
