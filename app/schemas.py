"""Request and response models of the public /v1 contract (separate from the tables)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.db.tables import Dataset, Job, Model, ModelAlias, ModelVersion, Upload, utcnow
from app.services.registry import Entry, Registered

if TYPE_CHECKING:
    from app.services.sweeps import Board
from app.ml.ann import IndexParams

if TYPE_CHECKING:
    from app.services.indexes import IndexView


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


class RegisteredAs(BaseModel):
    name: str
    version: int
    aliases: list[str]


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
    reproducibility: dict[str, Any] = Field(
        default_factory=dict,
        description="how the model was made, to rerun and check it (POST "
                    "/v1/models/{id}/reproduce): params (resolved, with defaults), seed, dataset "
                    "{id, sha256, n_rows, features, target, n_features}, versions {python, torch, "
                    "scikit-learn, numpy, pretrainer, git_commit}, device ('cpu', 'cuda:0'), "
                    "device_name, threads, backbone {spec, sha256} and artifact_sha256 {file: "
                    "sha256}; {} for models trained before records were kept",
        examples=[{"params": {"n_clusters": 3, "random_state": 0}, "seed": 0,
                   "dataset": {"id": "ds_…", "sha256": "9f2c…", "n_rows": 300,
                               "features": ["a", "b"], "target": None, "n_features": 2},
                   "versions": {"python": "3.11.9", "torch": "2.14.1", "scikit-learn": "1.6.1",
                                "numpy": "2.2.0", "pretrainer": "0.1.0", "git_commit": None},
                   "device": "cpu", "device_name": "AMD EPYC 7B13", "threads": 2,
                   "backbone": None, "artifact_sha256": {"meta.json": "5d41…"}}])
    versions: list[RegisteredAs] = Field(
        default_factory=list, description="the model registry versions this model is: name, "
        "version and the aliases pointing at it (call it as name@version or name@alias)")

    @classmethod
    def from_row(cls, row: Model, versions: list[Registered] | None = None) -> ModelOut:
        out = cls.model_validate(row, from_attributes=True)
        out.versions = [RegisteredAs(name=v.name, version=v.version, aliases=v.aliases)
                        for v in versions or []]
        return out


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


class PrunerIn(BaseModel):
    """The median pruner of a sweep over an epoch-trained (torch) algorithm."""

    model_config = ConfigDict(extra="forbid")

    n_startup_trials: int = Field(3, ge=0, le=1000, description="prune nothing until this many "
                                  "trials have finished")
    n_warmup_steps: int = Field(2, ge=0, le=100_000, description="prune no trial before this "
                                "epoch (the first epochs of any run are noisy)")


class SweepCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"dataset_id": "ds_0123456789abcdef0123456789abcdef", "algorithm": "kmeans",
         "space": {"n_clusters": {"choices": [2, 3, 4, 5, 6]}}, "params": {"random_state": 0},
         "metric": "silhouette", "direction": "maximize", "trials": 5, "parallelism": 2},
        {"dataset_id": "ds_0123456789abcdef0123456789abcdef", "algorithm": "autoencoder",
         "space": {"lr": {"low": 0.0001, "high": 0.1, "log": True},
                   "latent_dim": {"low": 2, "high": 16}},
         "params": {"epochs": 10}, "metric": "val_loss", "direction": "minimize", "trials": 12,
         "parallelism": 3, "pruner": {"n_startup_trials": 3, "n_warmup_steps": 3}}]})

    dataset_id: str = Field(max_length=64)
    algorithm: str = Field(max_length=64)
    space: dict[str, dict[str, Any]] = Field(
        description='per param: {"choices": [...]} or {"low", "high", "log"?, "int"?} (int: '
                    "default from the param's type; log: sample on a log scale)")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="fixed params of every trial")
    metric: str = Field(max_length=100, description="a metric the algorithm reports: a final "
                        "one (silhouette, …) or a per-epoch one (val_loss, …; a trial's value "
                        "is then its best epoch's)")
    direction: Literal["maximize", "minimize"]
    trials: int = Field(ge=1, description="the trial budget (at most "
                        "PRETRAINER_MAX_SWEEP_TRIALS)")
    parallelism: int = Field(1, ge=1, le=1000, description="trials queued or running at once")
    sampler: Literal["auto", "tpe", "random", "grid"] = Field(
        "auto", description="Optuna sampler; auto: grid when every param is choices and the "
                            "budget fits the grid, else TPE")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    pruner: PrunerIn | None = Field(
        default_factory=PrunerIn, description="median pruner fed by each epoch's metric "
                                              "(torch algorithms); null: no pruning")
    features: list[str] | None = None
    target: str | None = Field(None, max_length=255)
    name: str | None = Field(None, max_length=255)


class TrialOut(BaseModel):
    job_id: str
    number: int
    params: dict[str, Any] = Field(description="the params sampled for this trial")
    state: str = Field(description="queued or running while active; then succeeded, pruned, "
                                   "failed or cancelled")
    value: float | None = Field(description="the metric: the job's final metric, or its best "
                                            "epoch's for a per-epoch one")
    seconds: float | None = Field(description="from start to end (so far, while running)")
    model_id: str | None
    started_at: datetime | None
    finished_at: datetime | None


class SweepOut(BaseModel):
    id: str
    name: str | None
    dataset_id: str
    algorithm: str
    space: dict[str, Any]
    params: dict[str, Any]
    metric: str
    direction: str
    budget: int = Field(description="the trial budget (`trials` of the request)")
    parallelism: int
    sampler: str
    seed: int
    pruner: dict[str, Any] | None
    status: str = Field(description="running, succeeded, failed or cancelled")
    progress: float = Field(ge=0, le=1, description="ended trials / budget")
    trials: list[TrialOut] = Field(description="the leaderboard, by trial number")
    best_job_id: str | None
    best_model_id: str | None
    best_value: float | None
    error: str | None = Field(None, description="why it stopped making trials early")
    created_at: datetime
    finished_at: datetime | None


    @classmethod
    def from_board(cls, board: Board) -> SweepOut:
        s = board.sweep
        ended = sum(1 for t in board.trials if t.state not in ("queued", "running"))
        return cls(
            id=s.id, name=s.name, dataset_id=s.dataset_id, algorithm=s.algorithm, space=s.space,
            params=s.params, metric=s.metric, direction=s.direction, budget=s.trials,
            parallelism=s.parallelism, sampler=s.sampler, seed=s.seed, pruner=s.pruner,
            status=s.status, progress=min(1.0, ended / max(1, s.trials)),
            trials=[TrialOut.model_validate(t, from_attributes=True) for t in board.trials],
            best_job_id=board.best_job_id, best_model_id=board.best_model_id,
            best_value=board.best_value, error=s.error, created_at=s.created_at,
            finished_at=s.finished_at)


class SweepList(Page):
    items: list[SweepOut]


MODEL_REF = ("a model id, or a registry reference: NAME@VERSION (churn@3) or NAME@ALIAS "
             "(churn@production); NAME@latest is the newest version whose model exists")


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"model_id": "mdl_3f2a9c0e5b7d4e1f8a6b2c9d0e7f1a3b"}, {"model_id": "churn@staging"}]})

    model_id: str = Field(min_length=1, max_length=200, description=MODEL_REF)


class AliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True,  # "3" and true are not versions
                              json_schema_extra={"examples": [{"version": 3}]})

    version: int = Field(ge=1, le=2**31 - 1, description="the version the alias points at")


class VersionOut(BaseModel):
    name: str
    version: int
    model_id: str
    created_at: datetime
    created_by: str = Field(description="the API key id that registered it (anonymous when "
                                        "the API is open)")
    model_deleted_at: datetime | None = Field(
        None, description="when its model was deleted: the number stays taken, the version no "
                          "longer resolves")
    aliases: list[str] = Field(default_factory=list, description="aliases pointing at it")

    @classmethod
    def from_row(cls, row: ModelVersion, aliases: list[str] | None = None) -> VersionOut:
        return cls.model_validate({**_columns(row), "aliases": aliases or []})


class AliasOut(BaseModel):
    name: str
    alias: str
    version: int
    updated_at: datetime
    updated_by: str = Field(description="the API key id that last moved it")

    @classmethod
    def from_row(cls, row: ModelAlias) -> AliasOut:
        return cls.model_validate(row, from_attributes=True)


class AliasMoveOut(BaseModel):
    alias: str
    from_version: int | None = Field(description="null: the alias was created")
    to_version: int | None = Field(description="null: the alias was deleted")
    by: str = Field(description="the API key id that moved it (anonymous when the API is open)")
    at: datetime


class RegisteredModelOut(BaseModel):
    name: str
    created_at: datetime
    created_by: str
    latest_version: int | None = Field(description="the newest version whose model exists")
    versions: list[VersionOut] = Field(description="oldest first")
    aliases: dict[str, int] = Field(description="alias → version")
    history: list[AliasMoveOut] = Field(description="every alias move, oldest first")

    @classmethod
    def from_entry(cls, entry: Entry) -> RegisteredModelOut:
        held: dict[int, list[str]] = {}
        for a in entry.aliases:
            held.setdefault(a.version, []).append(a.alias)
        live = [v.version for v in entry.versions if v.model_deleted_at is None]
        return cls(name=entry.name, created_at=entry.created_at, created_by=entry.created_by,
                   latest_version=max(live, default=None),
                   versions=[VersionOut.from_row(v, held.get(v.version)) for v in entry.versions],
                   aliases={a.alias: a.version for a in entry.aliases},
                   history=[AliasMoveOut.model_validate(m, from_attributes=True)
                            for m in entry.moves])


class RegisteredModelList(Page):
    items: list[RegisteredModelOut]


def _columns(row: Any) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


# ---- batch prediction --------------------------------------------------------------------


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"dataset_id": "ds_0123456789abcdef0123456789abcdef", "output": "predict",
         "format": "parquet"}]})

    dataset_id: str = Field(max_length=64, description="The dataset to score: it holds the "
                            "columns (or images, or texts) the model was trained on.")
    output: Literal["predict", "embed"] = Field(
        "predict", description="predict: `prediction` (+ `probability_<class>` for a "
                               "classifier); embed: the columns e0..eK")
    format: Literal["parquet", "csv", "npy"] = Field(
        "parquet", description="The result file's format (npy: one 2-D array of the same "
                               "columns, a label that is not a number as its class index)")
    name: str | None = Field(None, max_length=255)


# ------------------------------------------------------------------ comparisons


class ComparisonCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"dataset_id": "ds_0123456789abcdef0123456789abcdef",
         "backbones": ["model:mdl_0123456789abcdef0123456789abcdef"], "seeds": 3,
         "params": {"epochs": 30, "freeze": "none"}}]})

    dataset_id: str = Field(max_length=64, description="a labelled dataset (class folders, "
                            "or a target column)")
    backbones: list[str] = Field(
        min_length=1, max_length=8, description="transfer backbones to compare, each "
        "pretrained and from scratch: model:<id>, a torchvision architecture, or minilm")
    seeds: int | list[int] = Field(
        3, description="a count n (seeds 0..n-1) or a list of seeds; each (backbone, "
        "pretrained) is trained once per seed, and pretrained and scratch share each seed's "
        "held-out split")
    params: dict[str, Any] = Field(
        default_factory=dict, description="transfer params every job shares (not backbone, "
        "pretrained or seed); validation_fraction defaults to 0.2: the metric is held out")
    features: list[str] | None = None
    target: str | None = Field(None, max_length=255)
    metric: str | None = Field(None, max_length=50, description="the held-out metric "
                               "compared; default accuracy (r2 for a regression head)")
    name: str | None = Field(None, max_length=255)


class ComparisonRowOut(BaseModel):
    backbone: str
    pretrained: bool
    values: list[float | None] = Field(description="the metric per seed, in the order of "
                                       "seeds; null where that job has not succeeded")
    job_ids: list[str | None]
    mean: float | None
    std: float | None = Field(description="sample standard deviation (ddof=1); null below "
                              "two values")
    n: int


class ComparisonDeltaOut(BaseModel):
    backbone: str
    delta: float | None = Field(description="mean of (pretrained - scratch), paired by seed")
    ci_low: float | None = Field(description="95% Student-t interval of the paired mean")
    ci_high: float | None
    n_pairs: int
    differences: list[float]
    note: str | None = Field(None, description="why there is no delta or no interval")


class ComparisonOut(BaseModel):
    id: str
    name: str | None
    dataset_id: str
    backbones: list[str]
    seeds: list[int]
    params: dict[str, Any]
    metric: str
    status: str = Field(description="queued, running, succeeded (every job ended and at least "
                        "one seed paired), failed or cancelled")
    counts: dict[str, int] = Field(description="child jobs by status")
    rows: list[ComparisonRowOut]
    deltas: list[ComparisonDeltaOut]
    job_ids: list[str]
    created_at: datetime


class ComparisonList(Page):
    items: list[ComparisonOut]


# ------------------------------------------------------------------ webhooks


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"url": "https://example.com/pretrainer", "events": ["job.*", "comparison.succeeded"]}]})

    url: str = Field(max_length=2048, description="http(s) URL of a public host")
    events: list[str] = Field(description="job.succeeded|failed|cancelled, batch.*, sweep.*, "
                              "comparison.*; a group's wildcard (job.*) or * for all")
    secret: str | None = Field(None, min_length=16, max_length=255, description="signing "
                               "secret; default: one is made and shown once, in this answer")


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    active: bool
    created_at: datetime
    secret: str | None = Field(None, description="only in the answer that created it")


class WebhookList(Page):
    items: list[WebhookOut]


class DeliveryOut(BaseModel):
    id: str
    webhook_id: str
    event: str
    status: str = Field(description="pending, delivered or failed")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None = Field(description="when a pending one is tried next")
    created_at: datetime
    delivered_at: datetime | None
    body: dict[str, Any]


class DeliveryList(Page):
    items: list[DeliveryOut]


# ---- nearest-neighbour indexes: /v1/models/{id}/indexes and /v1/models/{id}/neighbors ----


class IndexCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"dataset_id": "ds_0123456789abcdef0123456789abcdef"},
        {"dataset_id": "ds_0123456789abcdef0123456789abcdef", "metric": "cosine",
         "params": {"m": 16, "ef_construction": 100, "ef_search": 32}}]})

    dataset_id: str = Field(description="The rows to index: a dataset with the columns the "
                            "model was trained on (images: of the model's size).")
    metric: Literal["cosine", "l2"] | None = Field(
        None, description="cosine (1 - cosine similarity) or l2 (Euclidean distance); default: "
                          "l2 for scikit-learn models (PCA, k-means: coordinates in the data's "
                          "units), cosine for the others (learned representations)")
    params: IndexParams | None = Field(None, description="HNSW graph settings")
    label_column: str | None = Field(
        None, description="The column whose values answer as each neighbour's label; default: "
                          "the training job's target if the dataset has it, else a column named "
                          "label, labels, target, class, category or y that the model does not "
                          "read. Image datasets: the class folders.")


class IndexOut(BaseModel):
    id: str
    model_id: str
    dataset_id: str
    job_id: str = Field(description="the job that builds the index (GET /v1/jobs/{id}, events)")
    status: str = Field(description="its job's: queued, running, succeeded (ready), failed or "
                                    "cancelled")
    progress: float = Field(ge=0, le=1)
    metric: str
    n_rows: int | None = Field(description="rows indexed (once built)")
    dim: int | None = Field(description="width of the model's embedding (once built)")
    params: dict[str, Any]
    id_column: str | None = Field(description="the dataset column that answers as `id`")
    label_column: str | None = Field(description="the dataset column that answers as `label` "
                                                 "(null for images: their class folders)")
    error: JobError | None
    created_at: datetime

    @classmethod
    def from_view(cls, view: IndexView) -> IndexOut:
        row, job = view.row, view.job
        error = JobError(type=job.error_type, message=job.error_message or "") \
            if job is not None and job.error_type else None
        return cls(id=row.id, model_id=row.model_id, dataset_id=row.dataset_id,
                   job_id=row.job_id, status=view.status,
                   progress=job.progress if job is not None else 0.0, metric=row.metric,
                   n_rows=row.n_rows, dim=row.dim, params=row.params, id_column=row.id_column,
                   label_column=row.label_column, error=error, created_at=row.created_at)


class IndexList(Page):
    items: list[IndexOut]


class NeighborsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"instances": [[0.5, 1.2, -3.0]], "k": 5}]})

    instances: list[Any] = Field(description="rows as for /embed: lists in the model's feature "
                                 "order, objects keyed by column name, texts, or images "
                                 '({"b64": …})')
    k: int = Field(10, ge=1, le=1000, description="neighbours per instance; an index of fewer "
                   "rows answers all of them")
    index_id: str | None = Field(None, description="the index to ask; default: the model's "
                                 "newest ready index")


class Neighbor(BaseModel):
    row: int = Field(description="the row's number in the indexed dataset (0-based)")
    distance: float = Field(description="cosine: 1 - cosine similarity; l2: Euclidean distance")
    id: Any = Field(None, description="the row's value in the dataset's id column, if it has one")
    label: Any = Field(None, description="the row's label (label column or class folder), if any")


class NeighborsOut(BaseModel):
    neighbors: list[list[Neighbor]] = Field(description="per instance, nearest first")
    index_id: str
