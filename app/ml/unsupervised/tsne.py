"""t-SNE (scikit-learn TSNE): an embedding of the training rows only."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field
from sklearn.manifold import TSNE
from sklearn.preprocessing import StandardScaler

from app.ml.base import CapabilityError
from app.ml.unsupervised._common import (
    SEED_MAX,
    UnsupervisedAlgorithm,
    UnsupervisedModel,
    UnsupervisedParams,
    as_float,
)

TRAINING_EMBEDDING = "training_embedding"
# Trustworthiness is O(n²) in memory and time: above this many rows it is measured on a seeded
# sample (of the input rows and their embedding, the same rows on both sides).
TRUST_SAMPLE = 2000
TRUST_NEIGHBOURS = 5  # scikit-learn's default k
NO_NEW_POINTS = ("t-SNE cannot place new points: it only embeds the rows it was trained on. "
                 "The embedding of the training rows can be downloaded from the model "
                 "(GET /v1/models/{id}/embedding).")


class TSNEParams(UnsupervisedParams):
    """Params of tsne."""

    n_components: Literal[2, 3] = Field(2, description="Dimensions of the embedding.")
    perplexity: float = Field(30.0, gt=0, le=1_000, description="Roughly the number of "
                              "neighbours each row keeps close (typically 5 to 50). Must be "
                              "less than the number of training rows.")
    early_exaggeration: float = Field(12.0, ge=1, le=1_000, description="How far apart "
                                      "clusters are pushed in the first 250 iterations.")
    learning_rate: Literal["auto"] | Annotated[float, Field(gt=0, le=1e6)] = Field(
        "auto", description="Gradient step; 'auto' sets max(rows / early_exaggeration / 4, 50).")
    max_iter: int = Field(1000, ge=250, le=100_000, description="Most optimisation iterations "
                          "(at least 250).")
    metric: Literal["euclidean", "manhattan", "cosine", "chebyshev"] = Field(
        "euclidean", description="Distance between rows in the input space.")
    init: Literal["pca", "random"] = Field("pca", description="Starting embedding: the first "
                                           "principal components (more stable) or random.")
    random_state: int = Field(0, ge=0, le=SEED_MAX,
                              description="Seed, so runs are reproducible.")


def trust(xs: np.ndarray, embedding: np.ndarray, params: TSNEParams) -> float | None:
    """sklearn.manifold.trustworthiness (k=5, the job's metric) of the embedding: 1 when every
    row's embedded neighbours are its input neighbours; None with too few rows for k."""
    from sklearn.manifold import trustworthiness

    n = len(xs)
    if n > TRUST_SAMPLE:
        rows = np.sort(np.random.default_rng(params.random_state).choice(n, TRUST_SAMPLE,
                                                                         replace=False))
        xs, embedding, n = xs[rows], embedding[rows], TRUST_SAMPLE
    if TRUST_NEIGHBOURS >= n / 2:
        return None
    return as_float(trustworthiness(xs, embedding, n_neighbors=TRUST_NEIGHBOURS,
                                    metric=params.metric))


class TSNEModel(UnsupervisedModel):
    """A fitted t-SNE: keeps the training rows' embedding and answers nothing about new rows."""

    algorithm: ClassVar[str] = "tsne"
    has_training_embedding: ClassVar[bool] = True
    parts: ClassVar[dict[str, type]] = {TRAINING_EMBEDDING: np.ndarray}

    def __init__(self, *, meta: dict[str, Any], scaler: StandardScaler | None = None,
                 training_embedding: np.ndarray) -> None:
        super().__init__(meta=meta, scaler=scaler)
        self.training_embedding = training_embedding

    def predict(self, x: np.ndarray) -> dict[str, Any]:
        """Always refused: t-SNE has no mapping for new rows."""
        raise CapabilityError(NO_NEW_POINTS)

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Always refused: t-SNE has no mapping for new rows."""
        raise CapabilityError(NO_NEW_POINTS)


class TSNEAlgorithm(UnsupervisedAlgorithm[TSNEParams]):
    """tsne: scikit-learn's TSNE."""

    name: ClassVar[str] = "tsne"
    sweep_metrics: ClassVar[tuple[str, ...]] = ("kl_divergence", "trustworthiness")
    capabilities: ClassVar[tuple[str, ...]] = ()
    extras: ClassVar[tuple[str, ...]] = (TRAINING_EMBEDDING,)
    description: ClassVar[str] = (
        "t-distributed stochastic neighbour embedding (scikit-learn TSNE): a 2-D or 3-D map of "
        "the training rows that keeps neighbours close, for visualisation. It cannot place new "
        "rows, so the model answers no predict or embed; the embedding of the training rows, in "
        "their order, is downloaded from GET /v1/models/{id}/embedding. Metrics: final KL "
        "divergence, iterations, trustworthiness (k=5).")
    params_model: ClassVar[type[TSNEParams]] = TSNEParams
    trained_cls: ClassVar[type[TSNEModel]] = TSNEModel

    def problems(self, params: TSNEParams, *, n_rows: int,
                 n_features: int) -> list[tuple[str, str]]:
        found = []
        if params.perplexity >= n_rows:
            found.append(("perplexity", (f"perplexity={params.perplexity:g} must be less than "
                          f"the number of training rows ({n_rows})")))
        if params.init == "pca" and params.n_components > min(n_rows, n_features):
            found.append(("init", (f"init 'pca' needs at least n_components="
                          f"{params.n_components} rows and features, got {n_rows} rows and "
                          f"{n_features} features; use init 'random'")))
        return found

    def fit_estimator(self, xs: np.ndarray, params: TSNEParams) -> TSNE:
        return TSNE(n_components=params.n_components, perplexity=params.perplexity,
                    early_exaggeration=params.early_exaggeration,
                    learning_rate=params.learning_rate, max_iter=params.max_iter,
                    metric=params.metric, init=params.init,
                    random_state=params.random_state).fit(xs)

    def score(self, xs: np.ndarray, params: TSNEParams, fitted: TSNE) -> dict[str, Any]:
        return {"kl_divergence": as_float(fitted.kl_divergence_), "n_iter": int(fitted.n_iter_),
                "trustworthiness": trust(xs, np.asarray(fitted.embedding_), params)}

    def keep(self, xs: np.ndarray, params: TSNEParams, fitted: TSNE) -> dict[str, Any]:
        return {TRAINING_EMBEDDING: np.asarray(fitted.embedding_)}
