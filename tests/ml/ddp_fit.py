"""Run under torchrun: fit one algorithm on seeded data; rank 0 writes the history as JSON.

Usage: python -m torch.distributed.run --standalone --nproc-per-node N tests/ml/ddp_fit.py
       OUT.json ALGORITHM '{"params": ...}'
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from app.ml import registry
from app.ml.base import FitInput, NullReport
from app.ml.deep.runtime import distributed, init_distributed


class History(NullReport):
    """Keeps the per-epoch entries."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def epoch(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)


def data(seed: int = 3, n: int = 256, d: int = 12) -> np.ndarray:
    """Seeded rows with some structure (a low-rank part plus noise)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 3)) @ rng.normal(size=(3, d)) + 0.1 * rng.normal(size=(n, d))
            ).astype(np.float32)


def fit(algorithm: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The history of one fit of algorithm on data() (in this process's group, if any)."""
    report = History()
    algo = registry.get(algorithm)
    algo.fit(FitInput(data()), algo.params_model.model_validate(params), report)
    return report.entries


def main(out: str, algorithm: str, params: str) -> None:
    init_distributed()
    entries = fit(algorithm, json.loads(params))
    rank, world = distributed()
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"world": world, "history": entries}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
