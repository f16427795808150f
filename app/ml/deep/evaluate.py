"""How good a learned representation is, measured with labels the training never saw.

Embeddings of every row are split (stratified, seeded, 25% held out); a 5-NN classifier and a
logistic-regression linear probe (on standardised embeddings) are fitted on one part and scored
on the other. Skipped (None) without labels or with fewer than 2 classes of >= 2 rows.

Yardsticks: the same probe on the same split of the raw inputs (as the model reads them) and of
their PCA at the embedding's width, and the probe's gain over each: a representation earns its
keep only where the gain is positive.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

HELD_OUT = 0.25
KNN_K = 5
PROBE_MAX_ITER = 1000
# The raw-input yardsticks are skipped above this many input values (rows x features): a
# probe on raw pixels of big images would cost more than the training it measures.
RAW_PROBE_VALUES = 2**25


def probe_metrics(embeddings: np.ndarray, y: np.ndarray | None, seed: int,
                  raw: np.ndarray | None = None) -> dict[str, Any]:
    """{"knn_accuracy", "linear_probe_accuracy"} and, given the raw inputs (one flat row per
    embedding), "raw_probe_accuracy", "pca_probe_accuracy", "probe_gain_over_raw",
    "probe_gain_over_pca"; {} when the labels cannot support them."""
    split = _split(embeddings, y, seed)
    if split is None:
        return {}
    from sklearn.neighbors import KNeighborsClassifier

    fit, test, labels = split
    knn = KNeighborsClassifier(n_neighbors=min(KNN_K, len(fit))).fit(embeddings[fit], labels[fit])
    found: dict[str, Any] = {"knn_accuracy": float(knn.score(embeddings[test], labels[test])),
             "linear_probe_accuracy": linear_probe(embeddings, labels, fit, test)}
    if raw is not None and raw.size <= RAW_PROBE_VALUES:
        found.update(yardsticks(found["linear_probe_accuracy"], embeddings.shape[1], raw,
                                labels, fit, test, seed))
    return found


def linear_probe(x: np.ndarray, labels: np.ndarray, fit: np.ndarray, test: np.ndarray) -> float:
    """Held-out accuracy of logistic regression on standardised x, fitted on the fit rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=PROBE_MAX_ITER))
    probe.fit(x[fit], labels[fit])
    return float(probe.score(x[test], labels[test]))


def yardsticks(probe: float, width: int, raw: np.ndarray, labels: np.ndarray, fit: np.ndarray,
               test: np.ndarray, seed: int) -> dict[str, Any]:
    """The probe on the raw inputs and on their PCA (fitted on the fit rows) at `width`."""
    from sklearn.decomposition import PCA

    flat = raw.reshape(len(raw), -1).astype(np.float64, copy=False)
    raw_acc = linear_probe(flat, labels, fit, test)
    k = min(width, len(fit), flat.shape[1])
    pca = PCA(n_components=k, random_state=seed).fit(flat[fit])
    pca_acc = linear_probe(pca.transform(flat), labels, fit, test)
    return {"raw_probe_accuracy": raw_acc, "pca_probe_accuracy": pca_acc,
            "pca_probe_width": k, "probe_gain_over_raw": probe - raw_acc,
            "probe_gain_over_pca": probe - pca_acc}


def _split(embeddings: np.ndarray, y: np.ndarray | None, seed: int) -> Any:
    """(fit rows, held-out rows, labels): indices into embeddings, stratified and seeded."""
    if y is None:
        return None
    labels = np.asarray(y)
    if labels.shape != (len(embeddings),):
        raise ValueError(f"labels must be one per row: got {labels.shape} for {len(embeddings)} rows")
    classes, counts = np.unique(labels, return_counts=True)
    keep = np.flatnonzero(np.isin(labels, classes[counts >= 2]))
    n_classes = int((counts >= 2).sum())
    if n_classes < 2 or not np.isfinite(embeddings).all():
        return None
    n_test = max(math.ceil(HELD_OUT * len(keep)), n_classes)
    if len(keep) - n_test < n_classes:
        return None
    from sklearn.model_selection import train_test_split

    fit, test = train_test_split(keep, test_size=n_test, stratify=labels[keep],
                                 random_state=seed)
    return fit, test, labels
