"""A transfer job's labels: the task (classification classes, or a regression target's scale)
and the targets the loss reads."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.data.text import label_name
from app.ml.transfer.params import TransferParams


def targets(y: np.ndarray, p: TransferParams, n: int) -> tuple[dict[str, Any], np.ndarray]:
    """The task (head, classes or target scale) and the targets the loss reads."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"labels must be one per row: got shape {y.shape} for {n} rows")
    missing = [i for i, v in enumerate(y.tolist()) if v is None or (isinstance(v, float) and np.isnan(v))]
    if missing:
        raise ValueError(f"{len(missing)} rows have no label (the first is row {missing[0] + 1}); "
                         "fill them in or drop them")
    if p.head == "regression":
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
    names = np.array([label_name(v) for v in y.tolist()], dtype=object)
    classes = sorted(set(names.tolist()), key=_class_order)
    if len(classes) < 2:
        raise ValueError(f"classification needs at least 2 classes; the labels hold {len(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    # predict answers with the labels as they were (1, not "1"); names key the metrics.
    as_given: dict[str, Any] = {}
    for name, v in zip(names.tolist(), y.tolist(), strict=True):
        as_given.setdefault(name, v.item() if isinstance(v, np.generic) else v)
    if isinstance(p.class_weight, dict):
        unknown = sorted(set(p.class_weight) - set(classes))
        if unknown:
            raise ValueError(f"class_weight names classes the labels do not have: "
                             f"{', '.join(unknown)} (classes: {', '.join(classes)})")
    return ({"head": "classification", "classes": classes,
             "class_values": [as_given[c] for c in classes]},
            np.array([index[c] for c in names], dtype=np.int64))


def _class_order(name: str) -> tuple[int, float, str]:
    # Numeric class names in numeric order (2 before 10), then the rest alphabetically.
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)
