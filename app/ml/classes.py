"""Class labels of a classifier, whichever family trains it: the classes in one order, the
labels as the data had them, and the seeded held-out split a classifier is scored on.

transfer's classification head and lda read labels the same way, so a model of either answers
with the same class names and values, and evaluate maps a test set's labels alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.data.text import label_name
from app.ml.base import InputError


@dataclass(frozen=True)
class ClassLabels:
    """The classes of some labels and each row's class index."""

    classes: list[str]  # class names: numeric names in numeric order, then the rest
    values: list[Any]  # each class's label as the data held it (1, not "1")
    index: np.ndarray  # each row's class, an index into classes (int64)


def encode(y: Any, *, min_classes: int = 2) -> ClassLabels:
    """The classes of labels y (one per row) and each row's index; ValueError when a row has
    no label or there are fewer than min_classes classes."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be one per row: got shape {y.shape}")
    refuse_missing(y)
    names = [label_name(v) for v in y.tolist()]
    classes = sorted(set(names), key=_class_order)
    if len(classes) < min_classes:
        raise ValueError(f"classification needs at least {min_classes} classes; the labels "
                         f"hold {len(classes)}")
    position = {c: i for i, c in enumerate(classes)}
    # predict answers with the labels as they were (1, not "1"); names key the metrics.
    as_given: dict[str, Any] = {}
    for name, v in zip(names, y.tolist(), strict=True):
        as_given.setdefault(name, v.item() if isinstance(v, np.generic) else v)
    return ClassLabels(classes, [as_given[c] for c in classes],
                       np.array([position[n] for n in names], dtype=np.int64))


def refuse_missing(y: np.ndarray) -> None:
    """ValueError naming how many rows have no label, and the first of them."""
    missing = [i for i, v in enumerate(y.tolist()) if v is None or (isinstance(v, float)
                                                                     and np.isnan(v))]
    if missing:
        raise ValueError(f"{len(missing)} rows have no label (the first is row {missing[0] + 1}); "
                         "fill them in or drop them")


def indices_of(labels: Any, classes: list[str]) -> np.ndarray:
    """Class indices of a test set's labels; InputError naming labels the model never saw."""
    position = {c: i for i, c in enumerate(classes)}
    names = [label_name(v) for v in np.asarray(labels).tolist()]
    unknown = sorted(set(names) - set(position))
    if unknown:
        raise InputError(f"labels the model was not trained on: {', '.join(unknown[:10])} "
                         f"(its classes: {', '.join(classes)})")
    return np.array([position[n] for n in names], dtype=np.int64)


def held_out(targets: np.ndarray, n_held: int, seed: int, *,
             by_class: bool) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, held-out) row indices, sorted, with n_held rows held out: scikit-learn's
    train_test_split, stratified by class (by_class) whenever every class can give a row to
    each side."""
    from sklearn.model_selection import train_test_split

    n = len(targets)
    idx = np.arange(n)
    if n_held == 0:
        return idx, idx[:0]
    stratify = None
    if by_class:
        counts = np.bincount(targets)
        k = int((counts > 0).sum())
        if counts[counts > 0].min() >= 2 and k <= n_held <= n - k:
            stratify = targets
    train, held = train_test_split(idx, test_size=n_held, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(held)


def _class_order(name: str) -> tuple[int, float, str]:
    # Numeric class names in numeric order (2 before 10), then the rest alphabetically.
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)
