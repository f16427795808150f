"""A transfer job's labels: the task (classification classes, or a regression target's scale)
and the targets the loss reads."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.ml.classes import encode, refuse_missing
from app.ml.transfer.params import TransferParams


def targets(y: np.ndarray, p: TransferParams, n: int) -> tuple[dict[str, Any], np.ndarray]:
    """The task (head, classes or target scale) and the targets the loss reads."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"labels must be one per row: got shape {y.shape} for {n} rows")
    if p.head == "regression":
        return _regression(y)
    labels = encode(y)
    if isinstance(p.class_weight, dict):
        unknown = sorted(set(p.class_weight) - set(labels.classes))
        if unknown:
            raise ValueError(f"class_weight names classes the labels do not have: "
                             f"{', '.join(unknown)} (classes: {', '.join(labels.classes)})")
    return ({"head": "classification", "classes": labels.classes,
             "class_values": labels.values}, labels.index)


def _regression(y: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    refuse_missing(y)
    try:
        values = y.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError("a regression head needs a numeric target; the labels are not "
                         "numbers") from exc
    if not np.isfinite(values).all():
        raise ValueError("the regression target holds non-finite values")
    mean, std = float(values.mean()), float(values.std()) or 1.0
    return ({"head": "regression", "target_mean": mean, "target_std": std},
            ((values - mean) / std).astype(np.float32))
