"""Request and response models of the public /v1 contract (separate from the tables)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.db.tables import Dataset, Job, Model, Upload, utcnow


class ColumnOut(BaseModel):
    name: str
    dtype: str = Field(description="float64, float32, int64, int32, bool or string")
    nulls: int = Field(0, description="Number of missing values")
    min: float | None = Field(None, description="Smallest value of a numeric column (null for "
                              "text and booleans, or a dataset stored before it was recorded)")
    max: float | None = Field(None, description="Largest value of a numeric column")


class ClassOut(BaseModel):
    name: str
    count: int = Field(description="Number of images in the class")


class DatasetOut(BaseModel):
    id: str
    name: str
    kind: str = Field(description="tabular, image or text")
    format: str = Field(description="csv, parquet, npy, jsonl or zip")
    n_rows: int
    columns: list[ColumnOut] = Field(description="the schema; in lists, only the first "
                                                 "PRETRAINER_LIST_COLUMNS columns (see "
                                                 "columns_truncated); all of them on the item")
    n_columns: int = Field(0, description="how many columns the dataset has")
    columns_truncated: bool = Field(False, description="true when `columns` shows only the "
                                                       "first of n_columns (GET the item for all)")
    size_bytes: int
    sha256: str
    created_at: datetime
    image: dict[str, Any] | None = Field(
        None, description="image datasets: height, width and channels of the stored arrays, "
                          'original sizes ("WxH": count, top 20) and Pillow modes (mode: count)')
    classes: list[ClassOut] | None = Field(
        None, description="image datasets: one class per folder, in label order ([] if unlabelled)")
    labelled: bool | None = Field(None, description="image datasets: whether it has classes")
    text: dict[str, Any] | None = Field(
        None, description="text datasets: the text column, length statistics (characters, "
                          "words), the label column found by name and its label counts")

    @classmethod
    def from_row(cls, row: Dataset, *, max_columns: int | None = None) -> DatasetOut:
        """The dataset; with max_columns, its schema cut to that many columns (lists)."""
        fields = {name: getattr(row, name) for name in cls.model_fields
                  if name not in _DETAILS and name not in _COUNTED}
        columns = row.columns or []
        shown = columns if max_columns is None else columns[:max_columns]
        details = row.details or {}
        return cls.model_validate({**fields, **{k: details.get(k) for k in _DETAILS},
                                   "columns": shown, "n_columns": len(columns),
                                   "columns_truncated": len(shown) < len(columns)})


class UploadOut(BaseModel):
    id: str
    offset: int = Field(description="bytes received so far")
    length: int = Field(description="bytes declared at creation (Upload-Length)")
    status: str = Field(description="uploading, inspecting, ready, failed or expired")
    filename: str | None = Field(None, description="from Upload-Metadata `filename`")
    name: str | None = Field(None, description="from Upload-Metadata `name`: the dataset's name")
    dataset_id: str | None = Field(None, description="once ready: the dataset it became")
    problem: dict[str, Any] | None = Field(
        None, description="once failed: the problem+json that refused it, as POST /v1/datasets "
                          "would have answered")
    expires_at: datetime | None = Field(None, description="while uploading: when it expires "
                                                          "unless more bytes arrive")
    created_at: datetime

    @classmethod
    def from_row(cls, row: Upload) -> UploadOut:
        status = row.status
        if status == "uploading" and row.expires_at <= utcnow():  # the sweep has not run yet
            status = "expired"
        return cls(id=row.id, offset=row.offset, length=row.length, status=status,
                   filename=row.filename, name=row.name, dataset_id=row.dataset_id,
                   problem=row.problem, created_at=row.created_at,
                   expires_at=row.expires_at if status == "uploading" else None)


# DatasetOut fields filled from the row's `details` (absent for plain tabular datasets).
_DETAILS = ("image", "classes", "labelled", "text")
# DatasetOut fields computed from its columns, not read from the row.
_COUNTED = ("n_columns", "columns_truncated")


class Page(BaseModel):
    total: int
    next: int | None = Field(None, description="offset of the next page; null on the last one")

    @staticmethod
    def next_offset(offset: int, count: int, total: int) -> int | None:
        """Where the page after one of count rows from offset starts, or None after the last."""
        return offset + count if offset + count < total else None


class DatasetList(Page):
    items: list[DatasetOut]


class AlgorithmOut(BaseModel):
    name: str
    family: str
    data_kinds: list[str]
    capabilities: list[str] = Field(description="which of predict, embed, generate the model answers")
    description: str
    queue: str
    extras: list[str] = Field(default_factory=list)
    needs_target: bool = Field(False, description="true: a job names its label column in "
                               "target (images: labels come from the class folders)")
    params_schema: dict[str, Any]


class AlgorithmList(BaseModel):
    items: list[AlgorithmOut]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"dataset_id": "ds_0123456789abcdef0123456789abcdef", "algorithm": "kmeans",
         "params": {"n_clusters": 3, "random_state": 0}}]})

    dataset_id: str = Field(max_length=64)
    algorithm: str = Field(max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    features: list[str] | None = Field(
        None, description="columns to train on; default: every numeric column but the target")
    target: str | None = Field(None, max_length=255)
    name: str | None = Field(None, max_length=255)


class JobError(BaseModel):
    type: str
    message: str


class JobOut(BaseModel):
    id: str
    name: str | None
    dataset_id: str
    algorithm: str
    family: str
    queue: str
    kind: str = Field("train", description="train (makes a model), batch (scores a dataset), "
                      "reproduce, index, …")
    source_model_id: str | None = Field(None, description="the model a batch, index or "
                                        "reproduce job reads")
    parent_id: str | None = Field(None, description="the sweep or comparison this job is part of")
    params: dict[str, Any]
    features: list[str]
    target: str | None
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    progress: float = Field(ge=0, le=1)
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    error: JobError | None
    model_id: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Job) -> JobOut:
        error = JobError(type=row.error_type, message=row.error_message or "") if row.error_type else None
        return cls(
            id=row.id, name=row.name, dataset_id=row.dataset_id, algorithm=row.algorithm,
            family=row.family, queue=row.queue, kind=row.kind or "train",
            source_model_id=row.source_model_id, parent_id=row.parent_id, params=row.params, features=row.features,
            target=row.target, status=row.status, progress=row.progress, metrics=row.metrics,
            history=row.history, error=error, model_id=row.model_id, attempts=row.attempts,
            created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at,
        )


class JobList(Page):
    items: list[JobOut]


class ModelOut(BaseModel):
    id: str
    name: str | None
    algorithm: str
    family: str
    job_id: str
    dataset_id: str
    params: dict[str, Any]
    input_schema: dict[str, Any]
    capabilities: list[str]
    metrics: dict[str, Any]
    backbone_model_id: str | None = Field(
        None, description="transfer models: the model of this service they were fine-tuned from")
    lineage: dict[str, Any] = Field(
        default_factory=dict,
        description="transfer models: the backbone (model id, or architecture and the sha256 of "
                    "its weights file) and the chain from the pretraining dataset to this model")
    created_at: datetime

    @classmethod
    def from_row(cls, row: Model) -> ModelOut:
        return cls.model_validate(row, from_attributes=True)


class ModelList(Page):
    items: list[ModelOut]


class InstancesIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"instances": [[0.5, 1.2, -3.0]]}, {"instances": [{"x0": 0.5, "x1": 1.2, "x2": -3.0}]}]})

    instances: list[Any] = Field(
        description="rows as lists in the model's feature order, or objects keyed by column name")


class PredictOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    predictions: list[Any]
    probabilities: list[list[float]] | None = None


class EmbedOut(BaseModel):
    embeddings: list[list[float]]


class GenerateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "5" and true are not counts

    n: int = Field(1, ge=1, le=10_000)
    seed: int | None = None


class GenerateOut(BaseModel):
    samples: list[Any]


class EvaluateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(description="The test set: an uploaded dataset with the columns "
                            "the model was trained on.")
    target: str | None = Field(None, description="The label column; defaults to the training "
                               "job's target when the test set has it.")


class EvaluateOut(BaseModel):
    model_id: str
    dataset_id: str
    target: str | None
    n_rows: int
    metrics: dict[str, Any]


class TrainingEmbeddingOut(BaseModel):
    n_rows: int
    n_components: int
    embedding: list[list[float]]


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class ArchitectureOut(BaseModel):
    name: str
    source: str = Field(description="torchvision or minilm")
    data_kind: str = Field(description="what it reads: image or text")
    features_dim: int
    input_size: int | None = Field(None, description="image side its pretrained weights expect")
    description: str
    weights_present: bool = Field(description="whether pretrained weights can be loaded now")
    weights: str | None = Field(None, description="the weights file or folder found")
    expected_at: str = Field(description="where the weights are looked for")


class BackboneModelOut(BaseModel):
    id: str
    backbone: str = Field(description="the value of the transfer param: model:<id>")
    algorithm: str
    data_kind: str
    dataset_id: str
    created_at: datetime


class BackboneList(BaseModel):
    architectures: list[ArchitectureOut]
    models: list[BackboneModelOut]


class QuotaOut(BaseModel):
    limit: int = Field(description="the most the project may have or do at once")
    used: int = Field(description="what it has or does now (serving_requests: in this API "
                                  "process)")
    source: Literal["project", "settings"] = Field(
        description="project: set for this project (`pretrainer quotas set`); settings: the "
                    "PRETRAINER_QUOTA_* default")
    description: str


class ProjectOut(BaseModel):
    project: str
    key_id: str | None = Field(description="the API key of the request (null when the API is open)")
    quotas: dict[str, QuotaOut] = Field(description="stored_bytes, datasets, models, "
                                        "running_jobs, queued_jobs, serving_requests")
