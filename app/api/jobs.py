"""/v1/jobs: submit (validate, commit, then enqueue), list, show, cancel."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from app.api import events
from app.api.deps import (
    IdempotencyHeader,
    Limit,
    Offset,
    ProjectDep,
    SessionDep,
    SettingsDep,
    StoreDep,
)
from app.schemas import JobCreate, JobList, JobOut, Page
from app.services import idempotency, jobs
from app.services.job_checks import JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such job"}}
Status = Annotated[str | None, Query(pattern="^(queued|running|succeeded|failed|cancelled)$")]


@router.post("", status_code=202, response_model=JobOut,
             responses={410: {"description": "the dataset's (or backbone model's) files are "
                                             "missing from the blob store"},
                        422: {"description": "invalid params, or an algorithm that does not fit the dataset"},
                        429: {"description": "the project is at its queued_jobs or models quota "
                                             "(GET /v1/projects/me)"}})
def create_job(body: JobCreate, session: SessionDep, settings: SettingsDep, store: StoreDep,
               project: ProjectDep, idempotency_key: IdempotencyHeader = None) -> JobOut:
    """Start a training job; it is queued at once and trained by a worker.

    With an Idempotency-Key header, a retry of the same request returns the first job.
    """
    spec = JobSpec(dataset_id=body.dataset_id, algorithm=body.algorithm, params=body.params,
                   features=body.features, target=body.target, name=body.name)
    return JobOut.from_row(jobs.submit(
        session=session, project=project, spec=spec, settings=settings, store=store,
        idempotency_key=idempotency.check_key(idempotency_key),
        fingerprint=hashlib.sha256(body.model_dump_json().encode()).hexdigest()))


@router.get("", response_model=JobList)
def list_jobs(session: SessionDep, project: ProjectDep, limit: Limit = 50, offset: Offset = 0,
              status: Status = None) -> JobList:
    """The project's jobs, newest first; filter with ?status=."""
    rows, total = jobs.list_(session=session, project=project, limit=limit, offset=offset, status=status)
    return JobList(items=[JobOut.from_row(r) for r in rows], total=total,
                     next=Page.next_offset(offset, len(rows), total))


@router.get("/{job_id}", response_model=JobOut, responses=NOT_FOUND)
def get_job(job_id: str, session: SessionDep, project: ProjectDep) -> JobOut:
    """One job: status, progress, metrics, history, error and the model it made."""
    return JobOut.from_row(jobs.get(session=session, project=project, job_id=job_id))


@router.get("/{job_id}/events", response_class=StreamingResponse, responses={
    **NOT_FOUND, 200: {"description": "text/event-stream of `status`, `progress`, `epoch` and a "
                       "final `end` event carrying the whole job",
                       "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
def job_events(job_id: str, request: Request, session: SessionDep, settings: SettingsDep,
               project: ProjectDep) -> StreamingResponse:
    """Follow a job as server-sent events; the stream ends when the job does."""
    jobs.get(session=session, project=project, job_id=job_id)  # 404 before the stream starts
    body = events.stream(request, settings.resolved_database_url, project, job_id)
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/{job_id}/cancel", status_code=202, response_model=JobOut, responses=NOT_FOUND)
def cancel_job(job_id: str, session: SessionDep, project: ProjectDep) -> JobOut:
    """Cancel a job: a queued one at once, a running one between its steps (within seconds)."""
    job = jobs.request_cancel(session=session, project=project, job_id=job_id)
    session.commit()
    return JobOut.from_row(job)
