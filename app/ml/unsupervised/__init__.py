"""The unsupervised family: scikit-learn clustering and embedding on tabular data (and lda,
the labelled dimensionality reduction, which reads the job's target)."""

from __future__ import annotations

from app.ml.base import Algorithm
from app.ml.unsupervised._common import (
    FAMILY,
    SILHOUETTE_SAMPLE_SIZE,
    UnsupervisedAlgorithm,
    UnsupervisedModel,
    UnsupervisedParams,
)
from app.ml.unsupervised.agglomerative import (
    MAX_ROWS,
    AgglomerativeAlgorithm,
    AgglomerativeModel,
    AgglomerativeParams,
)
from app.ml.unsupervised.dbscan import DBSCANAlgorithm, DBSCANModel, DBSCANParams
from app.ml.unsupervised.gmm import GMMAlgorithm, GMMModel, GMMParams
from app.ml.unsupervised.kmeans import (
    KMeansAlgorithm,
    KMeansModel,
    KMeansParams,
    MiniBatchKMeansAlgorithm,
    MiniBatchKMeansModel,
    MiniBatchKMeansParams,
)
from app.ml.unsupervised.lda import LDAAlgorithm, LDAModel, LDAParams
from app.ml.unsupervised.pca import PCAAlgorithm, PCAModel, PCAParams
from app.ml.unsupervised.tsne import TSNEAlgorithm, TSNEModel, TSNEParams

# The family's algorithms, in catalogue order.
ALGORITHMS: tuple[Algorithm, ...] = (
    KMeansAlgorithm(),
    MiniBatchKMeansAlgorithm(),
    DBSCANAlgorithm(),
    AgglomerativeAlgorithm(),
    GMMAlgorithm(),
    PCAAlgorithm(),
    TSNEAlgorithm(),
    LDAAlgorithm(),
)

__all__ = [
    "ALGORITHMS", "FAMILY", "MAX_ROWS", "SILHOUETTE_SAMPLE_SIZE",
    "AgglomerativeAlgorithm", "AgglomerativeModel", "AgglomerativeParams",
    "DBSCANAlgorithm", "DBSCANModel", "DBSCANParams",
    "GMMAlgorithm", "GMMModel", "GMMParams",
    "KMeansAlgorithm", "KMeansModel", "KMeansParams",
    "LDAAlgorithm", "LDAModel", "LDAParams",
    "MiniBatchKMeansAlgorithm", "MiniBatchKMeansModel", "MiniBatchKMeansParams",
    "PCAAlgorithm", "PCAModel", "PCAParams",
    "TSNEAlgorithm", "TSNEModel", "TSNEParams",
    "UnsupervisedAlgorithm", "UnsupervisedModel", "UnsupervisedParams",
]
