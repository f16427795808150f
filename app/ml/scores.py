"""Metrics every family shares, each the scikit-learn computation of its name.

Agreement of a clustering with labels (ARI, NMI, purity), classification (accuracy, macro F1,
log loss) and regression (RMSE, MAE, R²). Used on training rows at fit and on an uploaded test
set by POST /v1/models/{id}/evaluate.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def purity(labels: Any, clusters: Any) -> float:
    """Share of rows whose cluster's most common label is their own label."""
    from sklearn.metrics.cluster import contingency_matrix

    table = contingency_matrix(np.asarray(labels), np.asarray(clusters))
    return float(table.max(axis=0).sum() / table.sum())


def label_agreement(labels: Any, clusters: Any) -> dict[str, float]:
    """{"ari", "nmi", "purity"} of a clustering against the true labels (DBSCAN's noise, -1,
    counts as one more cluster, as scikit-learn's metrics take it)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    y, c = np.asarray(labels).astype(str), np.asarray(clusters)
    if y.shape != c.shape:
        raise ValueError(f"labels must be one per row: got {y.shape} for {c.shape} rows")
    return {"ari": float(adjusted_rand_score(y, c)),
            "nmi": float(normalized_mutual_info_score(y, c)),
            "purity": purity(y, c)}


def classification_scores(true_idx: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """{"accuracy", "macro_f1", "log_loss"} of class-index targets against per-class
    probabilities (columns in class order); macro F1 over the classes of either side."""
    from sklearn import metrics as skm

    pred = probabilities.argmax(axis=1)
    labels = list(range(probabilities.shape[1]))
    return {"accuracy": float(skm.accuracy_score(true_idx, pred)),
            "macro_f1": float(skm.f1_score(true_idx, pred, average="macro", zero_division=0)),
            "log_loss": float(skm.log_loss(true_idx, probabilities, labels=labels))}


def regression_scores(true: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    """{"rmse", "mae", "r2"} (r2 None on a single row, where it is undefined)."""
    from sklearn import metrics as skm

    true, pred = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    return {"rmse": float(np.sqrt(skm.mean_squared_error(true, pred))),
            "mae": float(skm.mean_absolute_error(true, pred)),
            "r2": float(skm.r2_score(true, pred)) if len(true) > 1 else None}


def on_training_rows(metrics: dict[str, Any]) -> dict[str, Any]:
    """The same metrics named for what they are when measured on the rows trained on."""
    return {f"train_{k}": v for k, v in metrics.items()}
