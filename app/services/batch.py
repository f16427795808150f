"""Batch jobs: score a whole dataset with a model (POST /v1/models/{id}/batch), and find the
result file a finished one made (GET /v1/jobs/{id}/result).

A batch job is queued, run, cancelled and resumed as a training job is (app.services.jobs
submits it, app.runs.batch runs it); it makes a result blob instead of a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.config import Settings
from app.db.tables import BATCH, SUCCEEDED, Dataset, Job, Model
from app.errors import Conflict, NotFound, field_error
from app.ml import registry
from app.ml.base import EMBED, PREDICT
from app.services import datasets, jobs, models, quotas
from app.storage import BlobStore

OUTPUTS = (PREDICT, EMBED)
FORMATS = ("parquet", "csv", "npy")
# What GET /v1/jobs/{id}/result says each format is.
MEDIA_TYPES = {"parquet": "application/vnd.apache.parquet", "csv": "text/csv",
               "npy": "application/x-npy"}


@dataclass(frozen=True)
class BatchSpec:
    """What a client asks for in POST /v1/models/{id}/batch."""

    model_id: str
    dataset_id: str
    output: str = PREDICT
    format: str = "parquet"
    name: str | None = None


@dataclass(frozen=True)
class Result:
    """A finished batch job's result blob, and how to serve it."""

    key: str
    media_type: str
    filename: str


def submit(*, session: Session, project: str, spec: BatchSpec, settings: Settings,
           store: BlobStore, idempotency_key: str | None = None, fingerprint: str = "") -> Job:
    """Check the spec, insert the queued batch job, commit, then send it to its model's queue."""
    return jobs.queue_once(
        session=session, project=project, settings=settings, route="batch",
        prepare=lambda: _insert(session, project, spec, settings, store),
        idempotency_key=idempotency_key, fingerprint=fingerprint)


def _insert(session: Session, project: str, spec: BatchSpec, settings: Settings,
            store: BlobStore) -> Job:
    model = models.get(session=session, project=project, model_id=spec.model_id)
    _check_choice("output", spec.output, OUTPUTS)
    _check_choice("format", spec.format, FORMATS)
    if spec.output not in model.capabilities:
        can = ", ".join(c for c in model.capabilities if c in OUTPUTS) or "neither predict nor embed"
        raise field_error("output", f"a {model.algorithm} model cannot {spec.output} new rows; "
                          f"it can: {can}")
    dataset = datasets.named(session=session, project=project, dataset_id=spec.dataset_id)
    features = model_columns(model, dataset)
    # The job counts as queued and running work, but makes no model (see quotas.usage).
    quotas.check(session=session, project=project, defaults=settings.quota_defaults,
                 adding={"queued_jobs": 1})
    store.require(model.artifact_key, what=f"model {model.id}", field="model_id")
    store.require(dataset.blob_key, what=f"dataset {dataset.id}", field="dataset_id")
    job = jobs.new_queued(
        project=project, kind=BATCH, source_model_id=model.id, dataset_id=dataset.id,
        algorithm=model.algorithm, family=model.family,
        queue=registry.get(model.algorithm).queue, name=spec.name,
        params={"output": spec.output, "format": spec.format}, features=features,
        target=None, metrics={})
    session.add(job)
    session.flush()
    return job


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise field_error(field, f"unknown {field} {value!r}; one of: {', '.join(choices)}")


def model_columns(model: Model, dataset: Dataset) -> list[str]:
    """The dataset's columns the model reads (none for images), or a 422 naming dataset_id
    when the dataset holds another kind of data or lacks a column the model was trained on."""
    schema: dict[str, Any] = model.input_schema or {}
    kind = str(schema.get("kind", "tabular"))
    if (kind == "image") != (dataset.kind == "image"):
        raise field_error("dataset_id", f"the model reads {kind} data; dataset {dataset.id} "
                          f"holds {dataset.kind} data")
    if kind == "image":
        _check_image_size(schema, dataset)
        return []
    wanted = [schema["column"]] if kind == "text" else [f["name"] for f in schema["features"]]
    by_name = {c["name"]: c for c in dataset.columns or []}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise field_error("dataset_id", f"dataset {dataset.id} lacks the column(s) the model "
                          f"was trained on: {', '.join(missing)}")
    for name in wanted:
        _check_column(kind, by_name[name], dataset.id)
    return wanted


def _check_column(kind: str, column: dict[str, Any], dataset_id: str) -> None:
    name, dtype = column["name"], column["dtype"]
    if kind == "text" and dtype != "string":
        raise field_error("dataset_id", f'column "{name}" of dataset {dataset_id} is {dtype}; '
                          "the model reads texts")
    if kind == "tabular" and dtype == "string":
        raise field_error("dataset_id", f'column "{name}" of dataset {dataset_id} holds text; '
                          "the model reads numbers")
    if kind == "tabular" and column.get("nulls"):
        raise field_error("dataset_id", f'column "{name}" of dataset {dataset_id} has '
                          f"{column['nulls']} missing values; the model needs every value")


def _check_image_size(schema: dict[str, Any], dataset: Dataset) -> None:
    image = (dataset.details or {}).get("image", {})
    want = [int(schema.get(k, 0)) for k in ("height", "width", "channels")]
    have = [int(image.get(k, 0)) for k in ("height", "width", "channels")]
    if want != have:
        raise field_error("dataset_id", f"the model reads {'x'.join(map(str, want))} images "
                          f"(height x width x channels); dataset {dataset.id} holds "
                          f"{'x'.join(map(str, have))}")


def result(*, session: Session, project: str, job_id: str) -> Result:
    """The result of a succeeded batch job; NotFound for a job that makes none, Conflict while
    it has not succeeded."""
    job = jobs.get(session=session, project=project, job_id=job_id)
    if job.kind != BATCH:
        raise NotFound(f"job {job_id} is a {job.kind or 'train'} job: it makes no result file "
                       "(batch jobs do: POST /v1/models/{{id}}/batch)")
    if job.status != SUCCEEDED:
        raise Conflict(f"job {job_id} is {job.status}; its result can be read once it has "
                       "succeeded (GET /v1/jobs/{{id}} or its events say when)")
    if not job.result_key:
        raise NotFound(f"job {job_id} has no result file")
    fmt = str(job.params.get("format", "parquet"))
    return Result(job.result_key, MEDIA_TYPES.get(fmt, "application/octet-stream"),
                  f"{job.id}.{fmt}")
