"""The held-out split of a transfer job: seeded, stratified by class when it can be."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.ml.classes import held_out
from app.ml.deep.params import validation_rows
from app.ml.transfer.params import TransferParams


def split(targets: np.ndarray, task: dict[str, Any], p: TransferParams
          ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, held-out) row indices; stratified by class whenever every class can
    give a row to each side."""
    n_held = validation_rows(len(targets), p.validation_fraction or 0.0)
    return held_out(targets, n_held, p.seed, by_class=task["head"] == "classification")
