"""How good a learned representation is, measured with labels the training never saw.

Embeddings of every row are split (stratified, seeded, 25% held out); a 5-NN classifier and a
logistic-regression linear probe (on standardised embeddings) are fitted on one part and scored
on the other. Skipped (None) without labels or with fewer than 2 classes of >= 2 rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

HELD_OUT = 0.25
KNN_K = 5
PROBE_MAX_ITER = 1000


def probe_metrics(embeddings: np.ndarray, y: np.ndarray | None, seed: int) -> dict[str, float]:
    """{"knn_accuracy", "linear_probe_accuracy"}, or {} when the labels cannot support them."""
    split = _split(embeddings, y, seed)
    if split is None:
        return {}
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_fit, x_test, y_fit, y_test = split
    knn = KNeighborsClassifier(n_neighbors=min(KNN_K, len(y_fit))).fit(x_fit, y_fit)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=PROBE_MAX_ITER))
    probe.fit(x_fit, y_fit)
    return {"knn_accuracy": float(knn.score(x_test, y_test)),
            "linear_probe_accuracy": float(probe.score(x_test, y_test))}


def _split(embeddings: np.ndarray, y: np.ndarray | None, seed: int) -> Any:
    if y is None:
        return None
    labels = np.asarray(y)
    if labels.shape != (len(embeddings),):
        raise ValueError(f"labels must be one per row: got {labels.shape} for {len(embeddings)} rows")
    classes, counts = np.unique(labels, return_counts=True)
    keep = np.isin(labels, classes[counts >= 2])
    n_classes = int((counts >= 2).sum())
    if n_classes < 2 or not np.isfinite(embeddings).all():
        return None
    x, labels = embeddings[keep], labels[keep]
    n_test = max(math.ceil(HELD_OUT * len(labels)), n_classes)
    if len(labels) - n_test < n_classes:
        return None
    from sklearn.model_selection import train_test_split

    return train_test_split(x, labels, test_size=n_test, stratify=labels, random_state=seed)
