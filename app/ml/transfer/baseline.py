"""The yardstick of a transfer job: a plain model on the raw inputs, on the same split.

Logistic regression (classification) or ridge regression on the raw inputs: standardised rows,
[0, 1] pixels, or TF-IDF of the texts. A transfer model earns its keep where it beats this.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.ml.deep.evaluate import RAW_PROBE_VALUES
from app.ml.scores import regression_scores

BASELINE_MAX_ITER = 1000


def _pipeline(kind: str, classify: bool) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    head = LogisticRegression(max_iter=BASELINE_MAX_ITER) if classify else Ridge()
    if kind == "text":
        return make_pipeline(TfidfVectorizer(), head)
    return make_pipeline(StandardScaler(), head)


def _raw(kind: str, data: Any) -> Any:
    if kind == "text":
        return np.asarray(data, dtype=object)
    arr = np.asarray(data)
    if kind == "image":
        return arr.reshape(len(arr), -1).astype(np.float32) / 255.0
    return arr.astype(np.float64, copy=False)


def baseline_metrics(kind: str, data: Any, targets: np.ndarray, task: dict[str, Any],
                     train_idx: np.ndarray, eval_idx: np.ndarray) -> dict[str, Any]:
    """{"baseline_accuracy"} (classification) or {"baseline_rmse", "baseline_mae",
    "baseline_r2"} (regression, in the target's units) on eval_idx, fitted on train_idx;
    {} when the raw inputs are too big or the training rows hold a single class."""
    if kind != "text" and np.asarray(data).size > RAW_PROBE_VALUES:
        return {}
    x = _raw(kind, data)
    classify = task["head"] == "classification"
    if classify and len(np.unique(targets[train_idx])) < 2:
        return {}
    model = _pipeline(kind, classify).fit(x[train_idx], targets[train_idx])
    pred = model.predict(x[eval_idx])
    if classify:
        return {"baseline_accuracy": float((pred == targets[eval_idx]).mean())}
    scale, shift = task["target_std"], task["target_mean"]
    found = regression_scores(targets[eval_idx] * scale + shift, pred * scale + shift)
    return {f"baseline_{k}": v for k, v in found.items()}
