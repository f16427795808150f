"""A transfer model's scores on its evaluation rows, next to the raw-input baseline's."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.ml.scores import on_training_rows
from app.ml.transfer.baseline import baseline_metrics


def scores(task: dict[str, Any], out: np.ndarray, targets: np.ndarray, eval_idx: np.ndarray,
            kind: str, data: Any, train_idx: np.ndarray) -> dict[str, Any]:
    """The model's scores and the raw-input baseline's, on the same rows; measured on the
    training rows (no validation split) they are named train_*."""
    scores = evaluate(task, out, targets[eval_idx])
    scores.update(baseline_metrics(kind, data, targets, task, train_idx, eval_idx))
    if "baseline_accuracy" in scores:
        scores["gain_over_baseline"] = scores["accuracy"] - scores["baseline_accuracy"]
    if len(eval_idx) and np.array_equal(eval_idx, train_idx):
        classes = scores.pop("classes", None)
        scores = on_training_rows(scores)
        if classes is not None:
            scores["classes"] = classes
    return scores


def evaluate(task: dict[str, Any], out: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """Classification: accuracy, macro-F1, per-class precision/recall/F1/support and the
    confusion matrix (rows: true class); regression: RMSE, MAE, R^2 in the target's units."""
    from sklearn import metrics as skm

    if task["head"] == "regression":
        scale, shift = task["target_std"], task["target_mean"]
        pred = out[:, 0].astype(np.float64) * scale + shift
        true = targets.astype(np.float64) * scale + shift
        r2 = float(skm.r2_score(true, pred)) if len(true) > 1 else None
        return {"rmse": float(np.sqrt(skm.mean_squared_error(true, pred))),
                "mae": float(skm.mean_absolute_error(true, pred)), "r2": r2}
    classes = task["classes"]
    labels = list(range(len(classes)))
    pred = out.argmax(axis=1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        targets, pred, labels=labels, zero_division=0)
    return {
        "accuracy": float(skm.accuracy_score(targets, pred)),
        "macro_f1": float(skm.f1_score(targets, pred, labels=labels, average="macro",
                                       zero_division=0)),
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]),
                          "f1": float(f1[i]), "support": int(support[i])}
                      for i, c in enumerate(classes)},
        "confusion_matrix": skm.confusion_matrix(targets, pred, labels=labels).tolist(),
        "classes": classes,
    }
