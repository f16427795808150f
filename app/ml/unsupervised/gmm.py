"""Gaussian mixture models (scikit-learn GaussianMixture)."""

from __future__ import annotations

import copy
import secrets
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from app.ml.base import EMBED, GENERATE, PREDICT, InputError
from app.ml.unsupervised._common import (
    SEED_MAX,
    UnsupervisedAlgorithm,
    UnsupervisedModel,
    UnsupervisedParams,
    as_float,
    too_many,
)

# The most samples one generate call draws (the API caps a request lower still).
MAX_GENERATE = 100_000
SEED_SPACE = 2**32  # RandomState's seeds


class GMMParams(UnsupervisedParams):
    """Params of gmm."""

    n_components: int = Field(1, ge=1, le=10_000, description="Number of Gaussian components. "
                              "Must not exceed the number of training rows.")
    covariance_type: Literal["full", "tied", "diag", "spherical"] = Field(
        "full", description="Shape of each component's covariance: 'full' its own general "
        "matrix, 'tied' one matrix shared by all, 'diag' its own diagonal, 'spherical' its own "
        "single variance.")
    tol: float = Field(1e-3, ge=0, le=1e6, description="EM stops when the gain in the mean "
                       "log-likelihood lower bound falls below this.")
    reg_covar: float = Field(1e-6, ge=0, le=1e6, description="Added to the covariance "
                             "diagonals so they stay positive definite.")
    max_iter: int = Field(100, ge=1, le=100_000, description="Most EM iterations in one run.")
    n_init: int = Field(1, ge=1, le=100, description="Number of EM runs from different "
                        "initialisations; the best is kept.")
    init_params: Literal["kmeans", "k-means++", "random", "random_from_data"] = Field(
        "kmeans", description="How the first responsibilities are set: from a k-means run, "
        "k-means++ seeding, random, or random rows as means.")
    random_state: int = Field(0, ge=0, le=SEED_MAX,
                              description="Seed for initialisation, so runs are reproducible.")


class GMMModel(UnsupervisedModel):
    """A fitted gmm: predict gives components and their probabilities, embed the
    probabilities, generate new rows drawn from the mixture."""

    algorithm: ClassVar[str] = "gmm"
    predicts_clusters: ClassVar[bool] = True
    clusters: ClassVar[bool] = True
    parts: ClassVar[dict[str, type]] = {"estimator": GaussianMixture}

    def __init__(self, *, meta: dict[str, Any], scaler: StandardScaler | None = None,
                 estimator: GaussianMixture) -> None:
        super().__init__(meta=meta, scaler=scaler)
        self.estimator = estimator

    def predict(self, x: np.ndarray) -> dict[str, Any]:
        """{"predictions": most likely component, "probabilities": one row per input row}."""
        rows = self.rows(x)
        return {"predictions": self.estimator.predict(rows).tolist(),
                "probabilities": self.estimator.predict_proba(rows).tolist()}

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Posterior probability of each component for each row."""
        return np.asarray(self.estimator.predict_proba(self.rows(x)))

    def generate(self, n: int, seed: int | None) -> list[list[float]]:
        """n rows drawn from the mixture, in the training data's units: the same seed draws
        the same rows (GaussianMixture.sample seeded with it, then shuffled, since sample
        returns the rows grouped by component)."""
        if not 1 <= int(n) <= MAX_GENERATE:
            raise InputError(f"n must be between 1 and {MAX_GENERATE}, got {n}")
        seed = secrets.randbelow(SEED_SPACE) if seed is None else int(seed) % SEED_SPACE
        sampler = copy.copy(self.estimator)  # a shallow copy: requests share no state
        sampler.random_state = seed
        drawn, _ = sampler.sample(int(n))
        drawn = drawn[np.random.default_rng(seed).permutation(len(drawn))]
        if self.scaler is not None:
            drawn = self.scaler.inverse_transform(drawn)
        rows: list[list[float]] = np.asarray(drawn, dtype=np.float64).tolist()
        return rows


class GMMAlgorithm(UnsupervisedAlgorithm[GMMParams]):
    """gmm: scikit-learn's GaussianMixture."""

    name: ClassVar[str] = "gmm"
    sweep_metrics: ClassVar[tuple[str, ...]] = ("bic", "aic", "log_likelihood")
    capabilities: ClassVar[tuple[str, ...]] = (PREDICT, EMBED, GENERATE)
    description: ClassVar[str] = (
        "Gaussian mixture model (scikit-learn GaussianMixture), fitted by EM: soft clustering "
        "where each row belongs to each component with a probability. predict gives the most "
        "likely component and the probabilities; embed gives the probabilities; generate "
        "draws new rows from the mixture, in the data's units (seeded). Metrics: BIC, "
        "AIC, mean log-likelihood per row, convergence.")
    params_model: ClassVar[type[GMMParams]] = GMMParams
    trained_cls: ClassVar[type[GMMModel]] = GMMModel

    def problems(self, params: GMMParams, *, n_rows: int,
                 n_features: int) -> list[tuple[str, str]]:
        return too_many("n_components", params.n_components, n_rows)

    def fit_estimator(self, xs: np.ndarray, params: GMMParams) -> GaussianMixture:
        return GaussianMixture(
            n_components=params.n_components, covariance_type=params.covariance_type,
            tol=params.tol, reg_covar=params.reg_covar, max_iter=params.max_iter,
            n_init=params.n_init, init_params=params.init_params,
            random_state=params.random_state).fit(xs)

    def score(self, xs: np.ndarray, params: GMMParams, fitted: GaussianMixture) -> dict[str, Any]:
        return {
            "bic": as_float(fitted.bic(xs)),
            "aic": as_float(fitted.aic(xs)),
            "log_likelihood": as_float(fitted.score(xs)),
            "converged": bool(fitted.converged_),
            "n_iter": int(fitted.n_iter_),
        }

    def keep(self, xs: np.ndarray, params: GMMParams, fitted: GaussianMixture) -> dict[str, Any]:
        return {"estimator": fitted}

    def assignments(self, xs: np.ndarray, params: GMMParams, fitted: GaussianMixture) -> np.ndarray:
        return np.asarray(fitted.predict(xs))
