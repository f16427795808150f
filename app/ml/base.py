"""The contract every algorithm keeps: a Params model, fit(), and a trained object."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

PREDICT = "predict"
EMBED = "embed"
GENERATE = "generate"


class Cancelled(Exception):
    """Raised by Report.check() when the job was cancelled."""


class CapabilityError(Exception):
    """The model cannot answer this kind of request (e.g. embed new points with t-SNE)."""


class InputError(Exception):
    """Input the model cannot take (wrong width, non-finite values); maps to a 4xx."""


class Report(Protocol):
    """How a fit talks to whoever runs it: progress, per-epoch history, cancellation."""

    def progress(self, fraction: float) -> None: ...

    def epoch(self, entry: dict[str, Any]) -> None: ...

    def check(self) -> None:
        """Raise Cancelled if the job was cancelled; call it between steps."""

    def checkpoint(self, write: Callable[[Path], None]) -> bool:
        """Offer a checkpoint: the runner calls write(path) when one is due; True if written."""


class NullReport:
    """A Report that records nothing: for tests and direct use."""

    def progress(self, fraction: float) -> None:
        pass

    def epoch(self, entry: dict[str, Any]) -> None:
        pass

    def check(self) -> None:
        pass

    def checkpoint(self, write: Callable[[Path], None]) -> bool:
        return False


class Params(BaseModel):
    """Base of every algorithm's params: unknown keys are an error, and types are strict.

    Strict: "5", true and 5.0 are not integers, "0.5" is not a number; an integer for a float
    param is still a number (3 for 3.0), as JSON does not tell them apart.
    """

    model_config = ConfigDict(extra="forbid", strict=True)


class Trained(ABC):
    """A fitted model: answers requests and round-trips through save/load."""

    algorithm: ClassVar[str]
    metrics: dict[str, Any]
    # Operations whose answer for a row is the same whatever other rows share the call (labels
    # from an argmin): these may be batched across callers without changing any answer. Float
    # outputs are not listed: BLAS sums a row differently in a bigger matrix (last-bit changes).
    row_exact: ClassVar[frozenset[str]] = frozenset()

    def predict(self, x: np.ndarray) -> dict[str, Any]:
        """Return {"predictions": [...], optional "probabilities", ...} for the rows of x."""
        raise CapabilityError(f"{self.algorithm} cannot predict")

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Return one vector per row of x."""
        raise CapabilityError(f"{self.algorithm} cannot embed")

    def generate(self, n: int, seed: int | None) -> Any:
        """Return n new samples."""
        raise CapabilityError(f"{self.algorithm} cannot generate")

    def evaluate(self, x: Any, y: np.ndarray | None) -> dict[str, Any]:
        """The metrics of the model's kind on new rows x (with their labels y, when it needs
        them): POST /v1/models/{id}/evaluate."""
        raise CapabilityError(f"{self.algorithm} has no metric to compute on new data")

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write everything needed to rebuild the model into an existing directory."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path) -> Trained:
        """Rebuild the model from what save() wrote; never unpickles arbitrary bytes."""


class Algorithm(ABC):
    """One trainable algorithm of the catalogue."""

    name: ClassVar[str]
    family: ClassVar[str]
    data_kinds: ClassVar[tuple[str, ...]]
    capabilities: ClassVar[tuple[str, ...]]
    description: ClassVar[str]
    params_model: ClassVar[type[Params]]
    trained_cls: ClassVar[type[Trained]]
    queue: ClassVar[str] = "cpu"
    # True when fit() takes labels (y=…) to evaluate the representation it learns.
    uses_labels: ClassVar[bool] = False
    # True when fit() takes `resume_from=<checkpoint path>` and continues from that epoch.
    resumable: ClassVar[bool] = False
    # True when y= holds the labels themselves (class names, or values) rather than indices.
    raw_labels: ClassVar[bool] = False
    # True when fit() takes `backbone=<BackboneRef>` resolved from its `backbone` param.
    uses_backbone: ClassVar[bool] = False

    def own(self, params: Params | dict[str, Any]) -> Any:
        """params as this algorithm's Params model (a dict is validated)."""
        if isinstance(params, self.params_model):
            return params
        if isinstance(params, Params):
            params = params.model_dump()
        return self.params_model.model_validate(params)

    def check_fit(self, params: Params, *, n_rows: int, n_features: int) -> list[tuple[str, str]]:
        """Problems that make params unfit for data of this shape, as (param, reason) pairs."""
        return []

    @abstractmethod
    def fit(self, x: np.ndarray, params: Params, report: Report) -> Trained:
        """Train on the rows of x (n_samples × n_features) and return the trained model.

        Image data arrives as uint8 (n, height, width, channels). Algorithms with uses_labels
        also take `y=` (int class indices, or None when the dataset has no labels).
        """
