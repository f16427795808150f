"""k-means and mini-batch k-means (scikit-learn KMeans / MiniBatchKMeans)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, TypeVar

import numpy as np
from pydantic import Field
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.preprocessing import StandardScaler

from app.ml.base import EMBED, PREDICT
from app.ml.unsupervised._common import (
    SEED_MAX,
    UnsupervisedAlgorithm,
    UnsupervisedModel,
    UnsupervisedParams,
    as_float,
    cluster_scores,
    too_many,
)

N_CLUSTERS = "Number of clusters (k). Must not exceed the number of training rows."
INIT = "How the first centroids are chosen: 'k-means++' spreads them out, 'random' picks rows."
N_INIT = ("Number of runs from different centroid seeds; the run with the lowest inertia is "
          "kept. More runs: better clusters, proportionally slower. 'auto' is scikit-learn's "
          "default: 1 run with init='k-means++', {random} with init='random'.")
SEED = "Seed for centroid initialisation (and the silhouette sample), so runs are reproducible."


class KMeansParams(UnsupervisedParams):
    """Params of kmeans."""

    n_clusters: int = Field(8, ge=1, le=10_000, description=N_CLUSTERS)
    init: Literal["k-means++", "random"] = Field("k-means++", description=INIT)
    n_init: Literal["auto"] | Annotated[int, Field(ge=1, le=100)] = Field(
        "auto", description=N_INIT.format(random=10))
    max_iter: int = Field(300, ge=1, le=100_000,
                          description="Most Lloyd/Elkan iterations in one run.")
    tol: float = Field(1e-4, ge=0, le=1, description="Relative tolerance on the change of the "
                       "centroids (scaled by the data's variance) that declares convergence.")
    random_state: int = Field(0, ge=0, le=SEED_MAX, description=SEED)
    algorithm: Literal["lloyd", "elkan"] = Field(
        "lloyd", description="'lloyd' is the classic EM-style algorithm; 'elkan' uses the "
        "triangle inequality and can be faster on well-separated clusters, with more memory.")


class MiniBatchKMeansParams(UnsupervisedParams):
    """Params of minibatch_kmeans."""

    n_clusters: int = Field(8, ge=1, le=10_000, description=N_CLUSTERS)
    init: Literal["k-means++", "random"] = Field("k-means++", description=INIT)
    batch_size: int = Field(1024, ge=1, le=1_000_000,
                            description="Rows per mini-batch.")
    max_iter: int = Field(100, ge=1, le=100_000,
                          description="Most passes over the whole dataset.")
    n_init: Literal["auto"] | Annotated[int, Field(ge=1, le=100)] = Field(
        "auto", description=N_INIT.format(random=3))
    random_state: int = Field(0, ge=0, le=SEED_MAX, description=SEED)
    tol: float = Field(0.0, ge=0, le=1, description="Early stop when the smoothed, normalised "
                       "change of the centroids falls below this; 0 turns it off.")
    max_no_improvement: int | None = Field(
        10, ge=0, le=100_000, description="Early stop after this many mini-batches without "
        "improvement of the smoothed inertia; null turns it off.")
    reassignment_ratio: float = Field(
        0.01, ge=0, le=1, description="Fraction of the largest cluster's count below which a "
        "centroid is reassigned to a new point; higher: fewer empty/small clusters, noisier.")


class KMeansModel(UnsupervisedModel):
    """A fitted kmeans: predict gives the nearest centroid, embed the distances to all of them."""

    algorithm: ClassVar[str] = "kmeans"
    predicts_clusters: ClassVar[bool] = True
    clusters: ClassVar[bool] = True
    parts: ClassVar[dict[str, type]] = {"estimator": KMeans}
    row_exact: ClassVar[frozenset[str]] = frozenset({"predict"})  # labels only

    def __init__(self, *, meta: dict[str, Any], scaler: StandardScaler | None = None,
                 estimator: KMeans | MiniBatchKMeans) -> None:
        super().__init__(meta=meta, scaler=scaler)
        self.estimator = estimator

    def predict(self, x: np.ndarray) -> dict[str, Any]:
        """{"predictions": cluster label of each row}."""
        return {"predictions": self.estimator.predict(self.rows(x)).tolist()}

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Distance of each row to each centroid."""
        return np.asarray(self.estimator.transform(self.rows(x)))


class MiniBatchKMeansModel(KMeansModel):
    """A fitted minibatch_kmeans; answers like kmeans."""

    algorithm: ClassVar[str] = "minibatch_kmeans"
    parts: ClassVar[dict[str, type]] = {"estimator": MiniBatchKMeans}


def centroid_metrics(xs: np.ndarray, fitted: KMeans | MiniBatchKMeans,
                     random_state: int) -> dict[str, Any]:
    """Metrics shared by both k-means flavours."""
    labels = fitted.labels_
    return {
        "inertia": as_float(fitted.inertia_),
        **cluster_scores(xs, labels, random_state=random_state),
        "n_iter": int(fitted.n_iter_),
        "n_clusters": len(np.unique(labels)),
    }


CP = TypeVar("CP", KMeansParams, MiniBatchKMeansParams)


class _CentroidAlgorithm(UnsupervisedAlgorithm[CP]):
    capabilities: ClassVar[tuple[str, ...]] = (PREDICT, EMBED)
    sweep_metrics: ClassVar[tuple[str, ...]] = ("inertia", "silhouette", "davies_bouldin",
                                                  "calinski_harabasz")

    def problems(self, params: CP, *, n_rows: int, n_features: int) -> list[tuple[str, str]]:
        return too_many("n_clusters", params.n_clusters, n_rows)

    def score(self, xs: np.ndarray, params: CP, fitted: Any) -> dict[str, Any]:
        return centroid_metrics(xs, fitted, params.random_state)

    def keep(self, xs: np.ndarray, params: CP, fitted: Any) -> dict[str, Any]:
        return {"estimator": fitted}

    def assignments(self, xs: np.ndarray, params: CP, fitted: Any) -> np.ndarray:
        return np.asarray(fitted.labels_)


class KMeansAlgorithm(_CentroidAlgorithm[KMeansParams]):
    """kmeans: scikit-learn's KMeans."""

    name: ClassVar[str] = "kmeans"
    description: ClassVar[str] = (
        "k-means clustering (scikit-learn KMeans): splits the rows into n_clusters groups around "
        "centroids, minimising the within-cluster sum of squares. predict gives each row's "
        "nearest centroid; embed gives its distances to every centroid. Metrics: inertia, "
        "silhouette, Davies-Bouldin, Calinski-Harabasz.")
    params_model: ClassVar[type[KMeansParams]] = KMeansParams
    trained_cls: ClassVar[type[KMeansModel]] = KMeansModel

    def fit_estimator(self, xs: np.ndarray, params: KMeansParams) -> KMeans:
        return KMeans(n_clusters=params.n_clusters, init=params.init, n_init=params.n_init,
                      max_iter=params.max_iter, tol=params.tol,
                      random_state=params.random_state, algorithm=params.algorithm).fit(xs)


class MiniBatchKMeansAlgorithm(_CentroidAlgorithm[MiniBatchKMeansParams]):
    """minibatch_kmeans: scikit-learn's MiniBatchKMeans."""

    name: ClassVar[str] = "minibatch_kmeans"
    description: ClassVar[str] = (
        "Mini-batch k-means (scikit-learn MiniBatchKMeans): k-means updated from small random "
        "batches of rows, much faster on large datasets at a small cost in inertia. Answers "
        "like kmeans: predict gives the nearest centroid, embed the distances to every centroid.")
    params_model: ClassVar[type[MiniBatchKMeansParams]] = MiniBatchKMeansParams
    trained_cls: ClassVar[type[MiniBatchKMeansModel]] = MiniBatchKMeansModel

    def fit_estimator(self, xs: np.ndarray, params: MiniBatchKMeansParams) -> MiniBatchKMeans:
        return MiniBatchKMeans(
            n_clusters=params.n_clusters, init=params.init, batch_size=params.batch_size,
            max_iter=params.max_iter, n_init=params.n_init, random_state=params.random_state,
            tol=params.tol, max_no_improvement=params.max_no_improvement,
            reassignment_ratio=params.reassignment_ratio).fit(xs)
