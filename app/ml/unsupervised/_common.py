"""What the unsupervised algorithms share: params, input checks, scaling, metrics, save/load."""

from __future__ import annotations

import math
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Self, TypeVar

import numpy as np
from pydantic import Field
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score
from sklearn.preprocessing import StandardScaler

from app.ml import artifacts
from app.ml.base import (
    Algorithm,
    CapabilityError,
    FitInput,
    InputError,
    Params,
    Report,
    Trained,
)
from app.ml.scores import label_agreement

FAMILY = "unsupervised"
# Silhouette is O(n²); above this many rows it is computed on a seeded random sample.
SILHOUETTE_SAMPLE_SIZE = 2000
SEED_MAX = 2**32 - 1  # numpy's limit for a seed
FLOAT_DTYPES = ("float32", "float64")
SCALER_PART = "scaler"
# A clustering's own labels of its training rows, kept with the artifact at fit.
TRAINING_LABELS = "training_labels"
# check_fit names a param for each problem; problems of the data itself (too few or too many
# rows for the algorithm) name this instead.
DATASET = "dataset"


class UnsupervisedParams(Params):
    """Params every algorithm of the family takes."""

    # On by default, as for the PyTorch families: every algorithm here measures distances or
    # variances, which a feature in large units would rule (wine: k-means ARI .371 raw, .898
    # standardised). false gives scikit-learn's estimator on the raw data.
    standardize: bool = Field(
        True,
        description="Fit a StandardScaler on the training rows (zero mean, unit variance per "
        "feature) and apply it to every row the model later sees; results then equal "
        "scikit-learn's make_pipeline(StandardScaler(), estimator). false: the estimator on "
        "the raw data.",
    )


P = TypeVar("P", bound=UnsupervisedParams)


def as_float(value: Any) -> float | None:
    """A JSON-safe float: None for missing, NaN or infinite values."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def training_matrix(x: Any) -> np.ndarray:
    """The training rows as a finite 2-D float32/float64 array (other dtypes become float64)."""
    arr = np.asarray(x)
    if arr.dtype.name not in FLOAT_DTYPES:
        arr = arr.astype(np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"training data must be a non-empty table of rows, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("training data holds NaN or infinite values; clean or drop those rows")
    return arr


def checked_rows(x: Any, n_features: int, dtype: str) -> np.ndarray:
    """Rows for predict/embed: 2-D, the training width, finite, cast to the training dtype."""
    try:
        arr = np.asarray(x)
    except ValueError as exc:  # ragged rows: numpy cannot make a table of them
        raise InputError(f"expected rows of {n_features} features each: {exc}") from exc
    if np.iscomplexobj(arr):
        raise InputError("values must be real numbers, not complex")
    if arr.ndim != 2 or arr.shape[1] != n_features:
        got = arr.shape[1] if arr.ndim == 2 else f"an array of shape {arr.shape}"
        raise InputError(f"expected {n_features} features, got {got}")
    if arr.shape[0] == 0:
        raise InputError("expected at least one row, got none")
    try:
        arr = arr.astype(dtype, copy=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"every value must be a number: {exc}") from exc
    if not np.isfinite(arr).all():
        raise InputError("values must be finite numbers (no NaN or infinity)")
    return arr


def cluster_scores(x: np.ndarray, labels: np.ndarray, *, metric: str = "euclidean",
                   random_state: int = 0) -> dict[str, float | None]:
    """Silhouette, Davies-Bouldin and Calinski-Harabasz; None where they are undefined."""
    n_labels, n_rows = len(np.unique(labels)), len(labels)
    if not 2 <= n_labels <= n_rows - 1:
        return {"silhouette": None, "davies_bouldin": None, "calinski_harabasz": None}
    sample = SILHOUETTE_SAMPLE_SIZE if n_rows > SILHOUETTE_SAMPLE_SIZE else None
    return {
        "silhouette": _silhouette(x, labels, metric, sample, random_state),
        "davies_bouldin": as_float(davies_bouldin_score(x, labels)),
        "calinski_harabasz": as_float(calinski_harabasz_score(x, labels)),
    }


def _silhouette(x: np.ndarray, labels: np.ndarray, metric: str, sample: int | None,
                random_state: int) -> float | None:
    try:
        return as_float(silhouette_score(x, labels, metric=metric, sample_size=sample,
                                         random_state=random_state))
    except ValueError:  # a sample that drew a single cluster has no silhouette
        return None


def too_many(name: str, value: int, n_rows: int) -> list[tuple[str, str]]:
    """The problem of asking for more clusters/components than there are training rows."""
    if value <= n_rows:
        return []
    return [(name, f"{name}={value} must not exceed the number of training rows ({n_rows})")]


class UnsupervisedModel(Trained):
    """A fitted model of the family: input checks, optional scaling and save/load of its parts.

    `parts` names what the model keeps besides meta.json: an np.ndarray part is saved as
    <name>.npy, any other type with skops as <name>.skops and checked to be that type on load.
    Subclasses take their parts as keyword arguments of the same names.
    """

    parts: ClassVar[dict[str, type]] = {}
    # True for clusterings: their training labels are kept and evaluate scores agreement.
    clusters: ClassVar[bool] = False
    # Components and distances to centres are coordinates in the data's own (scaled) units:
    # Euclidean distance is how these models measure themselves.
    neighbor_metric: ClassVar[Literal["cosine", "l2"]] = "l2"
    # The clustering of the training rows, in row order (None: not a clustering, or trained
    # before labels were kept).
    training_labels: np.ndarray | None = None

    def __init__(self, *, meta: dict[str, Any], scaler: StandardScaler | None = None) -> None:
        self.params: dict[str, Any] = meta["params"]
        self.metrics = meta["metrics"]
        self.n_features_in: int = int(meta["n_features_in"])
        self.dtype: str = meta["dtype"]
        self.scaler = scaler

    @property
    def meta(self) -> dict[str, Any]:
        """What meta.json holds."""
        return {"algorithm": self.algorithm, "params": self.params, "metrics": self.metrics,
                "n_features_in": self.n_features_in, "dtype": self.dtype}

    def checked(self, x: np.ndarray) -> np.ndarray:
        """Rows checked against the training width and cast to the training dtype."""
        return checked_rows(x, self.n_features_in, self.dtype)

    def scale(self, rows: np.ndarray) -> np.ndarray:
        """Rows standardized as the training rows were (unchanged without standardize)."""
        return self.scaler.transform(rows) if self.scaler is not None else rows

    def rows(self, x: np.ndarray) -> np.ndarray:
        """Checked, cast and (if trained so) standardized rows: what the estimator takes."""
        return self.scale(self.checked(x))

    def evaluate(self, x: np.ndarray, y: np.ndarray | None) -> dict[str, Any]:
        """Clusterings: ARI, NMI and purity of predict against y; PCA-like models: the mean
        reconstruction error of predict."""
        if self.clusters:
            if y is None:
                raise InputError("scoring a clustering needs labels: name the label column "
                                 "in target")
            return label_agreement(y, self.predict(x)["predictions"])
        answer = self.predict(x)
        if "reconstruction_error" not in answer:
            raise CapabilityError(f"{self.algorithm} has no metric on new rows")
        return {"reconstruction_error": float(np.mean(answer["reconstruction_error"]))}

    def save(self, directory: Path) -> None:
        """Write meta.json, the scaler if any, every part and the training labels if kept."""
        directory = Path(directory)
        artifacts.write_meta(directory, self.meta)
        if self.training_labels is not None:
            artifacts.save_array(self.training_labels, directory / f"{TRAINING_LABELS}.npy")
        if self.scaler is not None:
            artifacts.save_estimator(self.scaler, directory / f"{SCALER_PART}.skops")
        for name, kind in self.parts.items():
            value = getattr(self, name)
            if kind is np.ndarray:
                artifacts.save_array(value, directory / f"{name}.npy")
            else:
                artifacts.save_estimator(value, directory / f"{name}.skops")

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Rebuild from what save() wrote, through the allow-listed loaders only."""
        directory = Path(directory)
        meta = artifacts.read_meta(directory)
        if meta.get("algorithm") != cls.algorithm:
            raise artifacts.UnsafeArtifact(
                f"{directory} holds a {meta.get('algorithm')!r} model, not {cls.algorithm!r}")
        scaler = None
        if meta["params"].get("standardize"):
            scaler = artifacts.load_estimator(directory / f"{SCALER_PART}.skops", StandardScaler)
        loaded = {name: cls._load_part(directory, name, kind) for name, kind in cls.parts.items()}
        model = cls(meta=meta, scaler=scaler, **loaded)
        if (directory / f"{TRAINING_LABELS}.npy").is_file():
            model.training_labels = artifacts.load_array(directory / f"{TRAINING_LABELS}.npy")
        return model

    @staticmethod
    def _load_part(directory: Path, name: str, kind: type) -> Any:
        if kind is np.ndarray:
            return artifacts.load_array(directory / f"{name}.npy")
        return artifacts.load_estimator(directory / f"{name}.skops", kind)


class UnsupervisedAlgorithm(Algorithm, Generic[P]):
    """fit() for the family: check, scale, fit, score; subclasses fill in the three steps."""

    family: ClassVar[str] = FAMILY
    data_kinds: ClassVar[tuple[str, ...]] = ("tabular",)
    queue: ClassVar[str] = "cpu"
    extras: ClassVar[tuple[str, ...]] = ()
    trained_cls: ClassVar[type[UnsupervisedModel]]

    def check_fit(self, params: Params, *, n_rows: int, n_features: int) -> list[tuple[str, str]]:
        """Problems that make params unfit for data of this shape, as (param, reason) pairs."""
        return self.problems(self.own(params), n_rows=n_rows, n_features=n_features)

    def problems(self, params: P, *, n_rows: int, n_features: int) -> list[tuple[str, str]]:
        """The algorithm's own shape checks; none by default."""
        return []

    def fit(self, data: FitInput, params: Params, report: Report) -> UnsupervisedModel:
        """Train on the rows of data.x and return the trained model; data.labels (the job's
        target, one per row) only scores a clustering's agreement with them."""
        p = self.own(params)
        report.check()
        report.progress(0.05)
        x = training_matrix(data.x)
        self._refuse_unfit(p, x)
        scaler = StandardScaler().fit(x) if p.standardize else None
        xs = scaler.transform(x) if scaler is not None else x
        report.check()
        fitted = self.fit_estimator(xs, p)
        report.progress(0.8)
        report.check()
        metrics = self.score(xs, p, fitted)
        assigned = self.assignments(xs, p, fitted)
        if assigned is not None and data.labels is not None:
            # The labels were never seen by the fit: agreement with them is not a training score.
            metrics.update(label_agreement(data.labels, assigned))
        meta = {"params": p.model_dump(mode="json"), "metrics": metrics,
                "n_features_in": int(x.shape[1]), "dtype": x.dtype.name}
        trained = self.trained_cls(meta=meta, scaler=scaler, **self.keep(xs, p, fitted))
        if assigned is not None:
            trained.training_labels = np.asarray(assigned, dtype=np.int64)
        report.progress(1.0)
        return trained

    def _refuse_unfit(self, p: P, x: np.ndarray) -> None:
        found = self.problems(p, n_rows=int(x.shape[0]), n_features=int(x.shape[1]))
        if found:
            raise ValueError("; ".join(reason for _, reason in found))

    @abstractmethod
    def fit_estimator(self, xs: np.ndarray, params: P) -> Any:
        """Fit the scikit-learn estimator on the (scaled) training rows."""

    @abstractmethod
    def score(self, xs: np.ndarray, params: P, fitted: Any) -> dict[str, Any]:
        """Training metrics as a JSON-safe dict."""

    def assignments(self, xs: np.ndarray, params: P, fitted: Any) -> np.ndarray | None:
        """A clustering's own labels of the training rows (None: not a clustering)."""
        return None

    @abstractmethod
    def keep(self, xs: np.ndarray, params: P, fitted: Any) -> dict[str, Any]:
        """The parts of the trained model, keyed as its `parts`."""
