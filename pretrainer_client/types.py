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
    # What the job does: train (makes a model), batch (scores a dataset into a result file),
    # reproduce, index; and the model a batch, reproduce or index job reads.
    kind: str = "train"
    source_model_id: str | None = None
    parent_id: str | None = None  # the sweep or comparison the job is part of
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
    # How it was made (params, seed, dataset sha256, versions, device, artifact hashes): what
    # Client.reproduce reruns and checks.
    reproducibility: dict[str, Any] = field(default_factory=dict)
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


@dataclass(frozen=True)
class Trial:
    """One trial of a sweep: its job, the params sampled for it, its state and value."""

    job_id: str
    number: int
    params: dict[str, Any]
    state: str
    value: float | None = None
    seconds: float | None = None
    model_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trial:
        return _parse(cls, data)


@dataclass(frozen=True)
class Sweep:
    """A hyperparameter sweep: its status and its trials' leaderboard with the best so far."""

    id: str
    algorithm: str
    dataset_id: str
    metric: str
    direction: str
    status: str
    progress: float
    budget: int
    parallelism: int
    created_at: datetime
    trials: list[Trial] = field(default_factory=list)
    space: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    best_job_id: str | None = None
    best_model_id: str | None = None
    best_value: float | None = None
    error: str | None = None
    finished_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sweep:
        return _parse(cls, data, trials=[Trial.from_json(t) for t in data.get("trials", [])])

    @property
    def done(self) -> bool:
        """The sweep has ended: succeeded, failed or cancelled."""
        return self.status in TERMINAL


@dataclass(frozen=True)
class ModelVersion:
    """Version n of a registry name: one model."""

    name: str
    version: int
    model_id: str
    created_at: datetime
    created_by: str
    model_deleted_at: datetime | None = None
    aliases: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelVersion:
        return _parse(cls, data)


@dataclass(frozen=True)
class Alias:
    """An alias of a registry name and the version it points at."""

    name: str
    alias: str
    version: int
    updated_at: datetime
    updated_by: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Alias:
        return _parse(cls, data)


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias: from_version None = created, to_version None = deleted."""

    alias: str
    from_version: int | None
    to_version: int | None
    by: str
    at: datetime


@dataclass(frozen=True)
class RegisteredModel:
    """A registry name: its versions (oldest first), aliases (alias → version), alias history."""

    name: str
    created_at: datetime
    created_by: str
    latest_version: int | None
    versions: list[ModelVersion]
    aliases: dict[str, int]
    history: list[AliasMove]
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RegisteredModel:
        moves = [AliasMove(m["alias"], m["from_version"], m["to_version"], m["by"],
                           datetime.fromisoformat(m["at"])) for m in data.get("history", [])]
        return _parse(cls, data, versions=[ModelVersion.from_json(v) for v in data["versions"]],
                      history=moves)


@dataclass(frozen=True)
class ComparisonRow:
    """The held-out metric of one (backbone, pretrained) per seed (None: no result yet)."""

    backbone: str
    pretrained: bool
    values: list[float | None]
    mean: float | None
    std: float | None
    n: int = 0
    job_ids: list[str | None] = field(default_factory=list)


@dataclass(frozen=True)
class ComparisonDelta:
    """Pretrained minus scratch for one backbone, paired by seed, with its 95% interval."""

    backbone: str
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    n_pairs: int = 0
    differences: list[float] = field(default_factory=list)
    note: str | None = None


@dataclass(frozen=True)
class Comparison:
    """Does pretraining pay? A comparison and its results so far."""

    id: str
    dataset_id: str
    backbones: list[str]
    seeds: list[int]
    metric: str
    status: str
    rows: list[ComparisonRow]
    deltas: list[ComparisonDelta]
    created_at: datetime
    name: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    job_ids: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Comparison:
        rows = [ComparisonRow(**{k: r[k] for k in r if k in ComparisonRow.__dataclass_fields__})
                for r in data.get("rows", [])]
        deltas = [ComparisonDelta(**{k: d[k] for k in d
                                     if k in ComparisonDelta.__dataclass_fields__})
                  for d in data.get("deltas", [])]
        return _parse(cls, data, rows=rows, deltas=deltas)


@dataclass(frozen=True)
class Webhook:
    """A registered URL and the events it gets; secret only in the answer that created it."""

    id: str
    url: str
    events: list[str]
    active: bool
    created_at: datetime
    secret: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Webhook:
        return _parse(cls, data)


@dataclass(frozen=True)
class Delivery:
    """One event sent (or to send) to a webhook, and how its tries went."""

    id: str
    webhook_id: str
    event: str
    status: str
    attempts: int
    created_at: datetime
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    body: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Delivery:
        return _parse(cls, data)


@dataclass(frozen=True)
class Index:
    """A nearest-neighbour index of a dataset's embeddings under a model; ready when its status
    (its job's) is succeeded."""

    id: str
    model_id: str
    dataset_id: str
    job_id: str
    status: str
    metric: str
    created_at: datetime
    progress: float = 0.0
    n_rows: int | None = None
    dim: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    id_column: str | None = None
    label_column: str | None = None
    error: JobError | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Index:
        error = JobError(**data["error"]) if data.get("error") else None
        return _parse(cls, data, error=error)

    @property
    def ready(self) -> bool:
        """The index answers neighbours queries."""
        return self.status == "succeeded"


@dataclass(frozen=True)
class Neighbor:
    """One indexed row near a query: its row number, distance, and id and label if any."""

    row: int
    distance: float
    id: Any = None
    label: Any = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Neighbor:
        return cls(data["row"], data["distance"], data.get("id"), data.get("label"))
