"""Typed results of the /v1 contract: thin dataclasses over the JSON, which stays in `raw`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import numpy as np

TERMINAL = ("succeeded", "failed", "cancelled")
T = TypeVar("T")


def _parse(cls: type[T], data: dict[str, Any], **parsed: Any) -> T:
    """cls from a JSON object (kept whole in raw): known fields picked, `*_at` parsed."""
    kwargs: dict[str, Any] = {**parsed, "raw": data}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name == "raw" or f.name in parsed or f.name not in data:
            continue
        value = data[f.name]
        if f.name.endswith("_at") and isinstance(value, str):
            value = datetime.fromisoformat(value)
        kwargs[f.name] = value
    return cls(**kwargs)


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str
    nulls: int = 0
    # A numeric column's smallest and largest value (None for text and booleans).
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Dataset:
    id: str
    name: str
    kind: str
    format: str
    n_rows: int
    columns: list[Column]
    size_bytes: int
    sha256: str
    created_at: datetime
    classes: list[dict[str, Any]] | None = None
    labelled: bool | None = None
    # In lists, `columns` holds only the first columns of a wide dataset; n_columns counts all.
    n_columns: int | None = None
    columns_truncated: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Dataset:
        columns = [Column(**{k: c[k] for k in ("name", "dtype", "nulls", "min", "max") if k in c})
                   for c in data.get("columns", [])]
        return _parse(cls, data, columns=columns)


@dataclass(frozen=True)
class JobError:
    type: str
    message: str


@dataclass(frozen=True)
class Job:
    id: str
    dataset_id: str
    algorithm: str
    family: str
    status: str
    progress: float
    params: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    created_at: datetime
    name: str | None = None
    queue: str | None = None
    features: list[str] = field(default_factory=list)
    target: str | None = None
    error: JobError | None = None
    model_id: str | None = None
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        error = JobError(**data["error"]) if data.get("error") else None
        return _parse(cls, data, error=error)

    @property
    def done(self) -> bool:
        """The job has ended: succeeded, failed or cancelled."""
        return self.status in TERMINAL


@dataclass(frozen=True)
class Model:
    id: str
    algorithm: str
    family: str
    job_id: str
    dataset_id: str
    capabilities: list[str]
    metrics: dict[str, Any]
    input_schema: dict[str, Any]
    created_at: datetime
    name: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Model:
        return _parse(cls, data)

    @property
    def features(self) -> list[str]:
        """The columns the model takes, in order (empty for image models)."""
        return [f["name"] for f in self.input_schema.get("features", [])]


@dataclass(frozen=True)
class Quota:
    limit: int
    used: int
    source: str  # "project" (set for this project) or "settings" (the service's default)
    description: str = ""


@dataclass(frozen=True)
class Project:
    project: str
    key_id: str | None
    quotas: dict[str, Quota]
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Project:
        quotas = {name: Quota(**{k: q[k] for k in ("limit", "used", "source", "description")
                                 if k in q}) for name, q in data.get("quotas", {}).items()}
        return _parse(cls, data, quotas=quotas)


@dataclass(frozen=True)
class Algorithm:
    name: str
    family: str
    data_kinds: list[str]
    capabilities: list[str]
    description: str
    params_schema: dict[str, Any]
    # True: a job names its label column in target (transfer on rows or texts, lda).
    needs_target: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Algorithm:
        return _parse(cls, data)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: items, the total count, and the offset of the next page (or None)."""

    items: list[T]
    total: int
    next: int | None


@dataclass(frozen=True)
class Prediction:
    """predictions (and probabilities, reconstruction_error… when the model gives them)."""

    predictions: Any
    probabilities: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prediction:
        probs = data.get("probabilities")
        extras = {k: as_array(v) for k, v in data.items() if k not in ("predictions", "probabilities")}
        return cls(as_array(data["predictions"]), None if probs is None else np.asarray(probs), extras)


@dataclass(frozen=True)
class Event:
    """One server-sent event of a job: status, progress, epoch or end."""

    event: str
    data: dict[str, Any]
    id: int | None = None


def as_array(value: Any) -> Any:
    """A JSON list as a NumPy array when it is rectangular and numeric or textual, else as is."""
    if not isinstance(value, list):
        return value
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged
        return value
    return value if arr.dtype == object else arr
