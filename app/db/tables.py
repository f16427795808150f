"""SQLAlchemy tables: the database row is the truth about every dataset, job and model."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JSONType = JSON().with_variant(JSONB(), "postgresql")

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
ACTIVE = frozenset({QUEUED, RUNNING})
TRAIN = "train"  # the kind of a job that trains a model
REPRODUCE = "reproduce"  # a job that retrains source_model_id from its record and compares
BATCH = "batch"  # the kind of a job that scores a dataset with a model into a result file
# Kinds of job that make no model: they count against the job quotas, not the models one.
INDEX = "index"  # the kind of a job that builds a nearest-neighbour index of a model's embeddings
MAKES_NO_MODEL = frozenset({BATCH, INDEX})


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def utcnow() -> datetime:
    """Timezone-aware now, in UTC."""
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A readable, unguessable id such as ds_3f2a…"""
    return f"{prefix}_{uuid.uuid4().hex}"


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSONType, list[Any]: JSONType}


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(100), default="default", index=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(20))
    format: Mapped[str] = mapped_column(String(20))
    n_rows: Mapped[int] = mapped_column(Integer)
    columns: Mapped[list[Any]] = mapped_column(JSONType)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(255))
    # Kind-specific facts: image size and channels, classes with counts, text statistics.
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_heartbeat", "status", "heartbeat_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(100), default="default", index=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # No foreign key: a job keeps its record after its dataset is deleted.
    dataset_id: Mapped[str] = mapped_column(String(40), index=True)
    algorithm: Mapped[str] = mapped_column(String(50))
    family: Mapped[str] = mapped_column(String(30))
    queue: Mapped[str] = mapped_column(String(30))
    # What the job does (see app.runner's KINDS): `train` makes a model; `batch` scores a
    # dataset with source_model_id and stores result_key; others add their own.
    kind: Mapped[str] = mapped_column(String(20), default=TRAIN, server_default=TRAIN)
    source_model_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    result_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # The sweep or comparison that made this job, if any.
    parent_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    features: Mapped[list[Any]] = mapped_column(JSONType)
    target: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str] = mapped_column(String(20), default=QUEUED)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    history: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    error_type: Mapped[str | None] = mapped_column(String(100), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The lease: which worker holds the job, since when it last proved alive, and which try it is.
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_epoch: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When its message was last sent: a queued job not taken long after is sent again.
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Model(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(100), default="default", index=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    algorithm: Mapped[str] = mapped_column(String(50))
    family: Mapped[str] = mapped_column(String(30))
    job_id: Mapped[str] = mapped_column(String(40), index=True)
    dataset_id: Mapped[str] = mapped_column(String(40), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    input_schema: Mapped[dict[str, Any]] = mapped_column(JSONType)
    capabilities: Mapped[list[Any]] = mapped_column(JSONType)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType)
    artifact_key: Mapped[str] = mapped_column(String(255))
    # The model this one was fine-tuned from (a `transfer` job on `model:<id>`), and the
    # whole chain: backbone model/architecture, weights sha256, pretraining dataset.
    backbone_model_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # How it was made, to rerun and check (app.ml.reproduce): resolved params and seed, the data
    # read, package versions, device, and the sha256 of each artifact file; {} before 0011.
    reproducibility: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class IdempotencyKey(Base):
    """A client's Idempotency-Key on a create call, and what that call created."""

    __tablename__ = "idempotency_keys"

    project: Mapped[str] = mapped_column(String(100), primary_key=True)
    route: Mapped[str] = mapped_column(String(50), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """An API key of a project: only its sha256 is kept, and a short prefix to tell keys apart."""

    __tablename__ = "api_keys"
    __table_args__ = (UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(100), index=True)
    prefix: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DatabaseIdentity(Base):
    """This database's identity (one row, made by the migration): the blob store's owner."""

    __tablename__ = "database_identity"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProjectQuota(Base):
    """A project's own quotas; a null column means the PRETRAINER_QUOTA_* setting applies."""

    __tablename__ = "project_quotas"

    project: Mapped[str] = mapped_column(String(100), primary_key=True)
    stored_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    datasets: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    models: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    running_jobs: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    queued_jobs: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    serving_requests: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Upload(Base):
    """A resumable (tus) upload: its bytes are staged on the API's disk until it completes and
    becomes a dataset through the same inspection as POST /v1/datasets."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(100), index=True)
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    filename: Mapped[str | None] = mapped_column(String(255), nullable=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # uploading, inspecting, ready, failed, expired
    status: Mapped[str] = mapped_column(String(20), index=True)
    dataset_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # The problem+json that refused it (inspection, a quota), once it failed.
    problem: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Sweep(Base):
    """A hyperparameter sweep: a search space over one algorithm's params, a metric to optimise,
    a trial budget and how many trials run at once. Its trials are jobs (parent_id = its id)."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(100), default="default", index=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    dataset_id: Mapped[str] = mapped_column(String(40), index=True)
    algorithm: Mapped[str] = mapped_column(String(50))
    # {param: {"choices": [...]} | {"low", "high", "log", "int"}}, as checked at creation.
    space: Mapped[dict[str, Any]] = mapped_column(JSONType)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)  # fixed params of every trial
    features: Mapped[list[Any] | None] = mapped_column(JSONType, nullable=True)
    target: Mapped[str | None] = mapped_column(String(255), nullable=True)
    metric: Mapped[str] = mapped_column(String(100))
    direction: Mapped[str] = mapped_column(String(10))
    trials: Mapped[int] = mapped_column(Integer)  # the budget
    parallelism: Mapped[int] = mapped_column(Integer)
    sampler: Mapped[str] = mapped_column(String(20))
    seed: Mapped[int] = mapped_column(Integer, default=0)
    # {"n_startup_trials", "n_warmup_steps"} of the median pruner; null: no pruning.
    pruner: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # running, succeeded, failed or cancelled.
    status: Mapped[str] = mapped_column(String(20), default=RUNNING)
    # Trials created so far; raised only by a conditional UPDATE, so that two trial ends
    # advancing the sweep at once cannot both create the next trial.
    asked: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    best_job_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    best_model_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    best_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Why it stopped making trials before its budget was spent (its dataset was deleted, …).
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SweepTrial(Base):
    """One trial of a sweep: the job that runs it, the params sampled for it and, once the job
    ended, its state (succeeded, pruned, failed, cancelled), value and per-epoch values."""

    __tablename__ = "sweep_trials"
    __table_args__ = (UniqueConstraint("sweep_id", "number", name="uq_sweep_trials_number"),)

    job_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    sweep_id: Mapped[str] = mapped_column(String(40), index=True)
    number: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the sampled ones only
    state: Mapped[str | None] = mapped_column(String(20), nullable=True)  # null while active
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    steps: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # {epoch: value}
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RegisteredModel(Base):
    """A model name of a project in the registry: its versions and aliases hang off it."""

    __tablename__ = "registered_models"

    project: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(40))


class ModelVersion(Base):
    """Version n of a name: one model. The primary key is what makes two registrations at once
    get distinct numbers (the loser retries with the next one)."""

    __tablename__ = "model_versions"
    __table_args__ = (Index("ix_model_versions_model", "project", "model_id"),)

    project: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    model_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(40))
    # The row outlives its model, so that a number is never given twice: set when it is deleted.
    model_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ModelAlias(Base):
    """An alias of a name (production, staging, …) and the version it points at now."""

    __tablename__ = "model_aliases"

    project: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    alias: Mapped[str] = mapped_column(String(50), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(40))


class AliasMove(Base):
    """One move of an alias: who pointed it from which version to which (None: none), when."""

    __tablename__ = "alias_moves"
    __table_args__ = (Index("ix_alias_moves_name", "project", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    alias: Mapped[str] = mapped_column(String(50))
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    by: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Comparison(Base):
    """"Does pretraining pay?": transfer jobs from each backbone, pretrained and from scratch,
    over several seeds. Its status and results are derived from its child jobs (parent_id)."""

    __tablename__ = "comparisons"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(100), index=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    dataset_id: Mapped[str] = mapped_column(String(40))
    backbones: Mapped[list[Any]] = mapped_column(JSONType)
    seeds: Mapped[list[Any]] = mapped_column(JSONType)
    # The params every child shares (backbone, pretrained and seed are set per child).
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    features: Mapped[list[Any] | None] = mapped_column(JSONType, nullable=True)
    target: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # The held-out metric compared: a key of the children's metrics (accuracy, r2, ...).
    metric: Mapped[str] = mapped_column(String(50))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Webhook(Base):
    """A URL of a project that is sent the events it asked for, signed with its secret."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(100), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[Any]] = mapped_column(JSONType)
    # Kept in clear: signing needs it. Shown once, in the answer that created the webhook.
    secret: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One event to send to one webhook: written with the event (outbox), sent after commit."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(String(40), index=True)
    event: Mapped[str] = mapped_column(String(50))
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(255), nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class NeighborIndex(Base):
    """A nearest-neighbour index of a dataset's embeddings under a model; built by a job of
    kind "index", whose status is the index's (a job that succeeded made a ready index)."""

    __tablename__ = "indexes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(100), index=True)
    model_id: Mapped[str] = mapped_column(String(40), index=True)
    dataset_id: Mapped[str] = mapped_column(String(40))
    job_id: Mapped[str] = mapped_column(String(40), index=True)
    metric: Mapped[str] = mapped_column(String(20))  # cosine or l2
    # Known once built: how many rows and how wide their embeddings are.
    n_rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dim: Mapped[int | None] = mapped_column(Integer, nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)  # m, ef_construction, ef_search
    # The dataset columns the answers quote (row ids, labels), when it has them.
    id_column: Mapped[str | None] = mapped_column(String(255), nullable=True)
    label_column: Mapped[str | None] = mapped_column(String(255), nullable=True)
    blob_key: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
