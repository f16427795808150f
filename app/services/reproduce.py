"""Reproduce jobs: rerun a model's training from its reproducibility record, and the record's
parts that come from rows (the data a job read, the model a rerun reads).

The record is built where the model is published (app.services.models.publish); a reproduce
job is an ordinary job of kind `reproduce` (app.services.jobs.submit) whose worker, after
publishing its own model, compares the two artifacts (app.ml.reproduce.compare).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.config import Settings
from app.db.tables import REPRODUCE, Dataset, Job, Model
from app.errors import Conflict, field_error
from app.services import jobs, models
from app.services.job_checks import JobSpec
from app.storage import BlobStore


def submit(*, session: Session, project: str, model_id: str, settings: Settings,
           store: BlobStore) -> Job:
    """Queue a job that retrains the model from its record: same algorithm, params, seed,
    dataset, features and target. 409 when the model has no record or its dataset changed,
    410 when the dataset was deleted."""
    model = models.get(session=session, project=project, model_id=model_id)
    record = model.reproducibility or {}
    if not record.get("dataset"):
        raise Conflict(f"model {model.id} has no reproducibility record (it was trained before "
                       "records were kept); train it again with POST /v1/jobs")
    data = record["dataset"]
    _check_dataset(session, project, model.id, data)
    spec = JobSpec(dataset_id=data["id"], algorithm=model.algorithm, params=record["params"],
                   features=list(data["features"]), target=data["target"],
                   name=f"reproduce {model.id}", kind=REPRODUCE, source_model_id=model.id)
    return jobs.submit(session=session, project=project, spec=spec, settings=settings,
                       store=store)


def _check_dataset(session: Session, project: str, model_id: str, data: dict[str, Any]) -> None:
    """The dataset the record names must still be there, holding the same bytes."""
    row = session.get(Dataset, data["id"])
    if row is None or row.project != project:
        raise field_error(
            "dataset_id", f"dataset {data['id']} was deleted", status=410,
            detail=f"model {model_id} was trained on dataset {data['id']}, which was deleted; "
                   "it cannot be reproduced (upload the same file again and train a new model)")
    if row.sha256 != data["sha256"]:
        raise field_error(
            "dataset_id", f"dataset {row.id} changed since the model was trained", status=409,
            detail=f"model {model_id} was trained on dataset {row.id} with sha256 "
                   f"{data['sha256']}; it now holds sha256 {row.sha256}, so a rerun would not "
                   "read the same data")


@dataclass(frozen=True)
class Source:
    """The model a reproduce job reruns: its record and where its artifact is."""

    model_id: str
    record: dict[str, Any]
    artifact_key: str

    @property
    def seed(self) -> int | None:
        """The seed the model was trained under (the rerun uses it too)."""
        seed = self.record.get("seed")
        return int(seed) if seed is not None else None


def source_of(*, session: Session, job: Job) -> Source | None:
    """The model a reproduce job reruns; None for other jobs. A source model deleted since the
    job was queued leaves nothing to compare with: FileNotFoundError."""
    if job.kind != REPRODUCE or job.source_model_id is None:
        return None
    row = session.get(Model, job.source_model_id)
    if row is None:
        raise FileNotFoundError(f"model {job.source_model_id}, which this job reproduces, was "
                                "deleted before the job ran")
    return Source(row.id, dict(row.reproducibility or {}), row.artifact_key)
