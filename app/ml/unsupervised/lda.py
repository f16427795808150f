"""Linear discriminant analysis (scikit-learn LinearDiscriminantAnalysis): the catalogue's
labelled dimensionality reduction.

Unlike the rest of the family it learns from the job's target, so it holds rows out (a seeded,
stratified split) to measure its accuracy; the scaler and the estimator see the training rows
only, and the model served is the one that was scored.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.preprocessing import StandardScaler

from app.ml.base import EMBED, PREDICT, Algorithm, FitInput, InputError, Params, Report
from app.ml.classes import ClassLabels, encode, held_out, indices_of
from app.ml.scores import classification_scores, on_training_rows
from app.ml.unsupervised._common import (
    DATASET,
    FAMILY,
    SEED_MAX,
    UnsupervisedModel,
    UnsupervisedParams,
    as_float,
    training_matrix,
)

Prior = Annotated[float, Field(gt=0, le=1e6)]


class LDAParams(UnsupervisedParams):
    """Params of lda."""

    solver: Literal["svd", "eigen"] = Field(
        "svd", description="'svd' needs no covariance matrix (good with many features) but "
        "cannot shrink; 'eigen' solves the eigenproblem of the scatter matrices and can. "
        "(scikit-learn's 'lsqr' is not offered: it cannot transform, and embed is this "
        "algorithm's point.)")
    n_components: int | None = Field(
        None, ge=1, le=10_000, description="Discriminant components embed returns: at most "
        "min(classes - 1, features); null keeps all of them.")
    shrinkage: Literal["auto"] | Annotated[float, Field(ge=0, le=1)] | None = Field(
        None, description="Covariance shrinkage, solver 'eigen' only: a number in [0, 1] "
        "(0: the empirical covariance, 1: its diagonal), 'auto' for the Ledoit-Wolf "
        "estimate, null for none. Helps when there are few rows per feature.")
    priors: dict[str, Prior] | None = Field(
        None, description="Prior probability of each class, keyed by class name (every class "
        "of the target, values normalised to sum to 1); null: the classes' shares of the "
        "training rows.")
    test_size: float = Field(
        0.2, ge=0, le=0.5, description="Share of the rows held out (seeded, stratified by "
        "class) to measure accuracy on; the model is fitted on the rest. 0 fits on every row "
        "and reports training accuracy only.")
    random_state: int = Field(0, ge=0, le=SEED_MAX,
                              description="Seed of the held-out split, so runs are reproducible.")

    @field_validator("shrinkage")
    @classmethod
    def _shrinks_with_eigen(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("solver") == "svd":
            raise ValueError("shrinkage needs solver 'eigen'; 'svd' cannot shrink")
        return value


class LDAModel(UnsupervisedModel):
    """A fitted lda: predict gives the class and its probabilities, embed the discriminant
    components."""

    algorithm: ClassVar[str] = "lda"
    parts: ClassVar[dict[str, type]] = {"estimator": LinearDiscriminantAnalysis}

    def __init__(self, *, meta: dict[str, Any], scaler: StandardScaler | None = None,
                 estimator: LinearDiscriminantAnalysis) -> None:
        super().__init__(meta=meta, scaler=scaler)
        self.estimator = estimator
        self.classes: list[str] = list(meta["classes"])
        self.class_values: list[Any] = list(meta["class_values"])

    @property
    def meta(self) -> dict[str, Any]:
        """What meta.json holds: the family's facts and the classes."""
        return {**super().meta, "classes": self.classes, "class_values": self.class_values}

    @property
    def task(self) -> dict[str, Any]:
        """A classifier's task, as transfer's classification head records it."""
        return {"head": "classification", "classes": self.classes,
                "class_values": self.class_values}

    def predict(self, x: np.ndarray) -> dict[str, Any]:
        """{"predictions": each row's class, as the training data spelled it, "probabilities":
        one per class, in the order of the model's classes}."""
        probs = self.estimator.predict_proba(self.rows(x))
        return {"predictions": [self.class_values[i] for i in probs.argmax(axis=1)],
                "probabilities": probs.tolist()}

    def embed(self, x: np.ndarray) -> np.ndarray:
        """The discriminant components of each row (scikit-learn's transform)."""
        return np.asarray(self.estimator.transform(self.rows(x)))

    def evaluate(self, x: np.ndarray, y: np.ndarray | None) -> dict[str, Any]:
        """Accuracy, macro F1 and log loss of predict on x against the labels y."""
        if y is None:
            raise InputError("scoring a classifier needs the labels: name the label column in "
                             "target")
        if len(y) != len(x):
            raise InputError(f"{len(y)} labels for {len(x)} rows")
        probs = np.asarray(self.predict(x)["probabilities"])
        return classification_scores(indices_of(y, self.classes), probs)


class LDAAlgorithm(Algorithm):
    """lda: scikit-learn's LinearDiscriminantAnalysis, on the job's target.

    Not an UnsupervisedAlgorithm: the family's shared fit scales every row and never reads
    labels, while lda splits the labelled rows first and fits its scaler on the training part.
    """

    name: ClassVar[str] = "lda"
    family: ClassVar[str] = FAMILY
    data_kinds: ClassVar[tuple[str, ...]] = ("tabular",)
    queue: ClassVar[str] = "cpu"
    extras: ClassVar[tuple[str, ...]] = ()
    capabilities: ClassVar[tuple[str, ...]] = (PREDICT, EMBED)
    needs_target: ClassVar[bool] = True
    # The numbers of its metrics a hyper-parameter search may optimise.
    sweep_metrics: ClassVar[tuple[str, ...]] = (
        "accuracy", "macro_f1", "log_loss", "train_accuracy", "explained_variance_ratio_sum")
    description: ClassVar[str] = (
        "Linear discriminant analysis (scikit-learn LinearDiscriminantAnalysis): labelled "
        "dimensionality reduction; needs a target. Projects the rows onto the directions that "
        "best separate the classes (at most classes - 1 of them). predict gives each row's "
        "class and the probabilities; embed the discriminant components. Metrics: explained "
        "variance ratio per component, and accuracy, macro F1 and log loss on held-out rows "
        "(train_* on the rows fitted).")
    params_model: ClassVar[type[LDAParams]] = LDAParams
    trained_cls: ClassVar[type[LDAModel]] = LDAModel

    def check_fit(self, params: Params, *, n_rows: int,
                  n_features: int) -> list[tuple[str, str]]:
        """Too few rows, or more components than features (classes are known at fit only)."""
        p: LDAParams = self.own(params)
        if n_rows < 3:
            return [(DATASET, ("lda needs at least 3 rows: two classes, and more rows than "
                               "classes"))]
        n = p.n_components
        if n is not None and n > n_features:
            return [("n_components", (f"n_components={n} must not exceed the number of "
                                      f"features ({n_features}), nor classes - 1"))]
        return []

    def fit(self, data: FitInput, params: Params, report: Report) -> LDAModel:
        """Split the labelled rows, fit the scaler and the estimator on the training part,
        score both parts, and return the model that was scored."""
        p: LDAParams = self.own(params)
        report.check()
        x = training_matrix(data.x)
        found = self.check_fit(p, n_rows=int(x.shape[0]), n_features=int(x.shape[1]))
        if found:
            raise ValueError("; ".join(reason for _, reason in found))
        labels = _class_labels(data.labels, len(x))
        n_held = min(round(len(x) * p.test_size), len(x) - 1) if p.test_size else 0
        train, held = held_out(labels.index, n_held, p.random_state, by_class=True)
        _refuse_unseen(labels, train)
        report.progress(0.1)
        scaler = StandardScaler().fit(x[train]) if p.standardize else None
        xs = scaler.transform(x) if scaler is not None else x
        estimator = _estimator(p, labels).fit(xs[train], labels.index[train])
        report.progress(0.8)
        report.check()
        width = p.n_components or min(len(labels.classes) - 1, int(x.shape[1]))
        metrics = {**_scores(estimator, xs, labels, train, held), "n_components": width}
        meta = {"params": p.model_dump(mode="json"), "metrics": metrics,
                "n_features_in": int(x.shape[1]), "dtype": x.dtype.name,
                "classes": labels.classes, "class_values": labels.values}
        report.progress(1.0)
        return LDAModel(meta=meta, scaler=scaler, estimator=estimator)


def _class_labels(y: Any, n_rows: int) -> ClassLabels:
    """The job's labels as classes; a continuous target is refused, not split into classes."""
    if y is None:
        raise ValueError("lda needs labels: name the label column in target")
    y = np.asarray(y)
    if y.shape != (n_rows,):
        raise ValueError(f"labels must be one per row: got shape {y.shape} for {n_rows} rows")
    if y.dtype.kind == "f" and not np.all(np.isnan(y) | (y == np.round(y))):
        raise ValueError("lda needs class labels, but the target holds fractional numbers (a "
                         "continuous target); name a column of classes")
    labels = encode(y)
    if len(labels.classes) >= n_rows:
        raise ValueError(f"lda needs more rows than classes: the target has "
                         f"{len(labels.classes)} classes in {n_rows} rows")
    return labels


def _refuse_unseen(labels: ClassLabels, train: np.ndarray) -> None:
    """Every class must have a training row: the split holds a class's only row out when it
    cannot stratify."""
    unseen = sorted(set(range(len(labels.classes))) - set(labels.index[train].tolist()))
    if unseen:
        names = ", ".join(labels.classes[i] for i in unseen[:10])
        raise ValueError(f"class(es) {names} have no training row left after the held-out "
                         "split (a class needs 2 rows to be stratified); lower test_size or add "
                         "rows")


def _estimator(p: LDAParams, labels: ClassLabels) -> LinearDiscriminantAnalysis:
    return LinearDiscriminantAnalysis(solver=p.solver, n_components=p.n_components,
                                      shrinkage=p.shrinkage, priors=_priors(p, labels))


def _priors(p: LDAParams, labels: ClassLabels) -> np.ndarray | None:
    """The priors param in the model's class order, normalised; None when not given."""
    if p.priors is None:
        return None
    missing = sorted(set(labels.classes) - set(p.priors))
    unknown = sorted(set(p.priors) - set(labels.classes))
    if missing or unknown:
        raise ValueError("priors must name every class of the target and no other: "
                         + "; ".join(part for part in (
                             f"missing {', '.join(missing)}" if missing else "",
                             f"unknown {', '.join(unknown)}" if unknown else "") if part)
                         + f" (classes: {', '.join(labels.classes)})")
    values = np.array([p.priors[c] for c in labels.classes], dtype=np.float64)
    normalised: np.ndarray = values / values.sum()
    return normalised


def _scores(estimator: LinearDiscriminantAnalysis, xs: np.ndarray, labels: ClassLabels,
            train: np.ndarray, held: np.ndarray) -> dict[str, Any]:
    """Explained variance ratio, held-out and training scores, and the split's sizes."""
    k = len(labels.classes)
    ratios = np.asarray(estimator.explained_variance_ratio_)
    metrics: dict[str, Any] = {
        "explained_variance_ratio": [as_float(r) for r in ratios],
        "explained_variance_ratio_sum": as_float(ratios.sum()),
        "n_classes": k, "classes": labels.classes,
        "train_rows": len(train), "test_rows": len(held),
    }
    if len(held):
        metrics.update(_classification(estimator, xs[held], labels.index[held]))
    metrics.update(on_training_rows(_classification(estimator, xs[train],
                                                    labels.index[train])))
    return metrics


def _classification(estimator: LinearDiscriminantAnalysis, xs: np.ndarray,
                    targets: np.ndarray) -> dict[str, Any]:
    return classification_scores(targets, estimator.predict_proba(xs))
