"""The held-out split of a transfer job: seeded, stratified by class when it can be."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.ml.deep.params import validation_rows
from app.ml.transfer.params import TransferParams


def split(targets: np.ndarray, task: dict[str, Any], p: TransferParams
          ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, held-out) row indices; stratified by class whenever every class can
    give a row to each side."""
    from sklearn.model_selection import train_test_split

    n = len(targets)
    n_val = validation_rows(n, p.validation_fraction or 0.0)
    idx = np.arange(n)
    if n_val == 0:
        return idx, idx[:0]
    stratify = None
    if task["head"] == "classification":
        counts = np.bincount(targets)
        k = int((counts > 0).sum())
        if counts[counts > 0].min() >= 2 and k <= n_val <= n - k:
            stratify = targets
    train, val = train_test_split(idx, test_size=n_val, random_state=p.seed, stratify=stratify)
    return np.sort(train), np.sort(val)
