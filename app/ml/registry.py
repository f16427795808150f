"""The catalogue: every trainable algorithm by name, and loading a trained model back.

Families register their Algorithm instances here. This module imports no torch: a family that
needs it must keep torch out of the module it registers from (import it inside fit/load).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.ml import deep, transfer, unsupervised
from app.ml.base import Algorithm, Trained

ALGORITHMS: dict[str, Algorithm] = {}


def register(algo: Algorithm, *, replace: bool = False) -> Algorithm:
    """Add an algorithm instance to the catalogue under its name."""
    if algo.name in ALGORITHMS and not replace:
        raise ValueError(f"algorithm {algo.name!r} is already registered")
    ALGORITHMS[algo.name] = algo
    return algo


def get(name: str) -> Algorithm:
    """The algorithm called name; KeyError if there is none."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise KeyError(f"unknown algorithm {name!r}; available: "
                       f"{', '.join(sorted(ALGORITHMS))}") from None


def describe(algo: Algorithm) -> dict[str, Any]:
    """One catalogue entry: what GET /v1/algorithms shows for the algorithm."""
    return {
        "name": algo.name,
        "family": algo.family,
        "data_kinds": list(algo.data_kinds),
        "capabilities": list(algo.capabilities),
        "description": algo.description,
        "queue": algo.queue,
        "extras": list(getattr(algo, "extras", ())),
        "needs_target": algo.needs_target,
        "params_schema": algo.params_model.model_json_schema(),
    }


def catalogue() -> list[dict[str, Any]]:
    """Every registered algorithm, in registration order."""
    return [describe(algo) for algo in ALGORITHMS.values()]


def load_trained(algorithm_name: str, directory: str | Path) -> Trained:
    """Load the trained model that save() wrote into directory."""
    return get(algorithm_name).trained_cls.load(Path(directory))


for _algo in (*unsupervised.ALGORITHMS, *deep.ALGORITHMS, *transfer.ALGORITHMS):
    register(_algo)
