"""Batch prediction: score a whole dataset with a model as a job, and download its result."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.api.deps import IdempotencyHeader, ProjectDep, SessionDep, SettingsDep, StoreDep
from app.schemas import BatchCreate, JobOut
from app.services import batch, idempotency

router = APIRouter(prefix="/v1", tags=["batch"])
Responses = dict[int | str, dict[str, Any]]
RESULT_CONTENT = {media: {"schema": {"type": "string", "format": "binary"}}
                  for media in batch.MEDIA_TYPES.values()}


@router.post("/models/{model_id}/batch", status_code=202, response_model=JobOut, responses={
    404: {"description": "no such model"},
    410: {"description": "the model's or the dataset's files are missing from the blob store"},
    422: {"description": "an unknown output or format, an output the model cannot give, or a "
                         "dataset of another kind or without a column the model reads"},
    429: {"description": "the project is at its queued_jobs quota (GET /v1/projects/me)"}})
def create_batch(model_id: str, body: BatchCreate, session: SessionDep, settings: SettingsDep,
                 store: StoreDep, project: ProjectDep,
                 idempotency_key: IdempotencyHeader = None) -> JobOut:
    """Score a whole dataset with the model, as a job (kind `batch`).

    The job streams the dataset through the model in blocks and stores one result file, rows
    in dataset order; follow it like a training job (GET /v1/jobs/{id}, its events, cancel),
    then download GET /v1/jobs/{id}/result. With an Idempotency-Key header, a retry of the same
    request returns the first job.
    """
    spec = batch.BatchSpec(model_id=model_id, dataset_id=body.dataset_id, output=body.output,
                           format=body.format, name=body.name)
    fingerprint = hashlib.sha256(f"{model_id}:{body.model_dump_json()}".encode()).hexdigest()
    return JobOut.from_row(batch.submit(
        session=session, project=project, spec=spec, settings=settings, store=store,
        idempotency_key=idempotency.check_key(idempotency_key), fingerprint=fingerprint))


@router.get("/jobs/{job_id}/result", response_class=FileResponse, responses={
    200: {"description": "the result file: Parquet, CSV or NPY as the job asked",
          "content": RESULT_CONTENT},
    404: {"description": "no such job, or a job that makes no result file (training)"},
    409: {"description": "the job has not succeeded (yet)"},
    410: {"description": "the result file is missing from the blob store"}})
def download_result(job_id: str, session: SessionDep, store: StoreDep,
                    project: ProjectDep) -> FileResponse:
    """A finished batch job's result file, streamed."""
    found = batch.result(session=session, project=project, job_id=job_id)
    path = store.require(found.key, what=f"the result of job {job_id}", field="job_id")
    return FileResponse(path, media_type=found.media_type, filename=found.filename)
