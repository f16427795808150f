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
