"""The contract every algorithm keeps: a Params model, fit(), and a trained object."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

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


@dataclass(frozen=True)
class BackboneRef:
    """A resolved transfer backbone: where its weights are and what the model record keeps."""

    spec: str  # as the job asked: "model:mdl_…", "resnet18", "minilm"
    source: str  # "model", "torchvision" or "minilm"
    name: str  # model id or architecture name
    data_kind: str  # what it reads: image, tabular or text
    pretrained: bool = True
    path: str | None = None  # artifact folder, weights file or model folder
    sha256: str | None = None
    model_algorithm: str | None = None
    input_schema: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FitInput:
    """Everything a job hands to fit(); each algorithm reads the fields it needs.

    One type for every algorithm, so whoever runs a job fills it in the same way whatever it
    trains: no per-algorithm switch on which arguments to pass.
    """

    # Rows (n_samples × n_features), uint8 images (n, height, width[, channels]), or texts.
    x: Any
    # The labels as class indices (0..k-1), or None when the dataset has no labels.
    y: np.ndarray | None = None
    # The labels themselves (class names, or a regression target's values), or None.
    labels: np.ndarray | None = None
    # The backbone the job's `backbone` param resolved to (transfer), if any.
    backbone: BackboneRef | None = None
    # A checkpoint this service wrote for an earlier try of the same job: algorithms that
    # train in epochs continue after its epoch; the others never write one.
    resume_from: Path | None = None


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
    # Capabilities the service asks about instead of testing algorithm names:
    # True: a call has a high fixed cost (a network), so every operation is worth batching
    # across callers, with a short wait for company; False: only the row_exact ones, no wait.
    batchable: ClassVar[bool] = False
    # True: training runs in epochs and records a loss per epoch (a loss curve exists).
    trains_in_epochs: ClassVar[bool] = False
    # True: predict() answers cluster ids (the plots colour the training rows by them).
    predicts_clusters: ClassVar[bool] = False
    # True: the model keeps the embedding of its training rows (training_embedding) but
    # cannot embed new rows (t-SNE); GET /v1/models/{id}/embedding serves it.
    has_training_embedding: ClassVar[bool] = False
    # How a nearest-neighbour index compares this model's embeddings when the request does not
    # say: by angle, as for learned representations (contrastive, autoencoder codes,
    # transfer features), whose length carries little meaning.
    neighbor_metric: ClassVar[Literal["cosine", "l2"]] = "cosine"

    @property
    def task(self) -> dict[str, Any] | None:
        """A supervised head's task ({"head", "classes" | target scale}); None for the rest."""
        return None

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
    # The numbers a job of this algorithm reports (in its final metrics, or per epoch in its
    # history) that a sweep may optimise; epoch ones also feed a sweep's pruner.
    sweep_metrics: ClassVar[tuple[str, ...]] = ()
    # True: fit learns from the job's labels (FitInput.labels): a job without a target (or,
    # for images, without class folders) is refused at submit (transfer, lda).
    needs_target: ClassVar[bool] = False

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

    def check_data(self, params: Params, *, kind: str,
                   value_range: tuple[float, float] | None) -> list[tuple[str, str]]:
        """Problems that make params unfit for the data's kind ("tabular", "image", "text")
        and values, as (param, reason) pairs; value_range: the (min, max) over the job's
        features, None when not known."""
        return []

    def backbone_of(self, params: Params) -> tuple[str, bool] | None:
        """(backbone spec, pretrained) that fit() needs resolved into FitInput.backbone; None
        when the algorithm trains without one."""
        return None

    @abstractmethod
    def fit(self, data: FitInput, params: Params, report: Report) -> Trained:
        """Train on data.x (and whichever labels, backbone or checkpoint it reads) and return
        the trained model."""
