"""Principal component analysis (scikit-learn PCA)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from app.ml.base import EMBED, PREDICT
from app.ml.unsupervised._common import (
    DATASET,
    SEED_MAX,
    UnsupervisedAlgorithm,
    UnsupervisedModel,
    UnsupervisedParams,
    as_float,
)

Count = Annotated[int, Field(ge=1, le=100_000)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
# Only the solvers that compute every component can stop at a fraction of the variance.
FRACTION_SOLVERS = ("auto", "full", "covariance_eigh")


class PCAParams(UnsupervisedParams):
    """Params of pca."""

    n_components: Count | Fraction | None = Field(
        None, description="Components to keep: an integer count (at most min(rows, features)); "
        "a fraction in (0, 1) to keep as many as explain that share of the variance; or null "
        "for all of them.")
    whiten: bool = Field(False, description="Scale the component scores to unit variance "
                         "(loses the relative variance of the components in embed).")
    svd_solver: Literal["auto", "full", "covariance_eigh", "arpack", "randomized"] = Field(
        "auto", description="'auto' picks by the data's shape; 'full' exact SVD; "
        "'covariance_eigh' eigen-decomposition of the covariance (many rows, few features); "
        "'arpack' and 'randomized' compute only the components asked for (integer "
        "n_components).")
    random_state: int = Field(0, ge=0, le=SEED_MAX, description="Seed for the 'arpack' and "
                              "'randomized' solvers, so runs are reproducible.")

    @model_validator(mode="after")
    def _fraction_needs_full_solver(self) -> PCAParams:
        if isinstance(self.n_components, float) and self.svd_solver not in FRACTION_SOLVERS:
            raise ValueError(f"a fractional n_components needs svd_solver "
                             f"{', '.join(FRACTION_SOLVERS)}; not {self.svd_solver!r}")
        return self


class PCAModel(UnsupervisedModel):
    """A fitted pca: embed gives component scores, predict the reconstruction and its error."""

    algorithm: ClassVar[str] = "pca"
    parts: ClassVar[dict[str, type]] = {"estimator": PCA}

    def __init__(self, *, meta: dict[str, Any], scaler: StandardScaler | None = None,
                 estimator: PCA) -> None:
        super().__init__(meta=meta, scaler=scaler)
        self.estimator = estimator

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Component scores of each row."""
        return np.asarray(self.estimator.transform(self.rows(x)))

    def predict(self, x: np.ndarray) -> dict[str, Any]:
        """{"predictions": each row rebuilt from its components, "reconstruction_error": MSE}."""
        rows = self.checked(x)
        recon = self.estimator.inverse_transform(self.estimator.transform(self.scale(rows)))
        if self.scaler is not None:
            # Back to the units the caller sent, so predictions compare with the input.
            recon = self.scaler.inverse_transform(recon)
        error = ((rows - recon) ** 2).mean(axis=1)
        return {"predictions": recon.tolist(), "reconstruction_error": error.tolist()}


class PCAAlgorithm(UnsupervisedAlgorithm[PCAParams]):
    """pca: scikit-learn's PCA."""

    name: ClassVar[str] = "pca"
    sweep_metrics: ClassVar[tuple[str, ...]] = ("explained_variance_ratio_sum",)
    capabilities: ClassVar[tuple[str, ...]] = (PREDICT, EMBED)
    description: ClassVar[str] = (
        "Principal component analysis (scikit-learn PCA): a linear projection onto the "
        "directions of largest variance. embed gives each row's component scores; predict gives "
        "its reconstruction from those components and the mean squared reconstruction error "
        "(in the input's units), useful for anomaly detection. Metrics: explained variance "
        "ratio per component and in total.")
    params_model: ClassVar[type[PCAParams]] = PCAParams
    trained_cls: ClassVar[type[PCAModel]] = PCAModel

    def problems(self, params: PCAParams, *, n_rows: int,
                 n_features: int) -> list[tuple[str, str]]:
        if n_rows < 2:
            return [(DATASET, "PCA needs at least 2 training rows")]
        n, limit = params.n_components, min(n_rows, n_features)
        if isinstance(n, int) and n > limit:
            return [("n_components", (f"n_components={n} must not exceed min(rows, features) "
                     f"= {limit}"))]
        if isinstance(n, int) and params.svd_solver == "arpack" and n == limit:
            return [("n_components", (f"svd_solver 'arpack' needs n_components < min(rows, "
                     f"features) = {limit}"))]
        return []

    def fit_estimator(self, xs: np.ndarray, params: PCAParams) -> PCA:
        return PCA(n_components=params.n_components, whiten=params.whiten,
                   svd_solver=params.svd_solver, random_state=params.random_state).fit(xs)

    def score(self, xs: np.ndarray, params: PCAParams, fitted: PCA) -> dict[str, Any]:
        ratios = [as_float(r) for r in fitted.explained_variance_ratio_]
        return {
            "explained_variance_ratio": ratios,
            "explained_variance_ratio_sum": as_float(np.sum(fitted.explained_variance_ratio_)),
            "n_components": int(fitted.n_components_),
        }

    def keep(self, xs: np.ndarray, params: PCAParams, fitted: PCA) -> dict[str, Any]:
        return {"estimator": fitted}
