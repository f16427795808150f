"""Jobs: submit (check, insert, commit, enqueue), read, list and cancel.

Checking a spec is app.services.job_checks; what a worker does with a job row (claim,
heartbeat, finish) is app.services.leases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app import logs
from app.config import Settings
from app.db.tables import CANCELLED, QUEUED, TERMINAL, Dataset, Job, Model, new_id, utcnow
from app.ml.transfer.backbones import MODEL_PREFIX
from app.queue import enqueue_train
from app.services import idempotency, job_end, owned, page, quotas
from app.services.job_checks import JobSpec, validate_spec
from app.storage import BlobStore

# Named as the API's: submit runs in the API process, whose lines are found under this name.
log = logs.get_logger("pretrainer.api.jobs")


def submit(*, session: Session, project: str, spec: JobSpec, settings: Settings,
           store: BlobStore, idempotency_key: str | None = None,
           fingerprint: str = "") -> Job:
    """Check the spec, insert the queued job, commit, then send it to its queue.

    With an idempotency key, a retry of the same request (same fingerprint) answers the first
    job and sends nothing. A broker that is down loses nothing: the row is committed and the
    reaper sends it again later.
    """
    return queue_once(session=session, project=project, settings=settings, route="jobs",
                      prepare=lambda: _prepare(session, project, spec, settings, store),
                      idempotency_key=idempotency_key, fingerprint=fingerprint)


def queue_once(*, session: Session, project: str, settings: Settings, route: str,
               prepare: Callable[[], Job], idempotency_key: str | None = None,
               fingerprint: str = "") -> Job:
    """Insert the job prepare() makes (checked, uncommitted), commit, then send it to its
    queue; with an idempotency key, a retry of the same request on the route answers the first
    job and sends nothing. A job alone (training, reproduce, batch) is submitted through here;
    a group's jobs (prepare_child) and an index build are committed with the row they belong
    to and then sent with enqueue."""
    claim = idempotency.Claim[Job](
        session=session, project=project, route=route, key=idempotency_key,
        fingerprint=fingerprint,
        load=lambda job_id: get(session=session, project=project, job_id=job_id))
    made = idempotency.once(claim, prepare)
    if made.created:  # committed: the row exists before any worker can see the message
        enqueue(settings, made.resource)
    return made.resource


def _prepare(session: Session, project: str, spec: JobSpec, settings: Settings,
             store: BlobStore, *, quota: bool = True) -> Job:
    """The checked, inserted (uncommitted) job whose files are all in the store; quota=False
    leaves the quota check to a caller that made it for a whole group."""
    job = _insert(session=session, project=project, spec=spec,
                  quota_defaults=settings.quota_defaults if quota else None,
                  weights_dir=settings.resolved_weights_dir, max_devices=settings.max_devices)
    for need in _needed_blobs(session=session, job=job):  # a 410 now, not a failed job later
        store.require(need.key, what=need.what, field=need.field)
    return job


def enqueue(settings: Settings, job: Job) -> None:
    """Send a committed job to its queue (a broker that is down: the reaper sends it later)."""
    try:
        enqueue_train(settings, job.id, job.queue, request_id=logs.current_request_id())
    except Exception:  # the broker is down: the row is committed, the reaper sends it later
        log.warning("job.enqueue_failed", job_id=job.id, exc_info=True)
        return
    log.info("job.enqueued", job_id=job.id, queue=job.queue, algorithm=job.algorithm)


def new_queued(*, project: str, **fields: Any) -> Job:
    """A new job row as every kind of job starts: queued, no progress, no history, enqueued
    now (fields: what it runs on what)."""
    return Job(id=new_id("job"), project=project, status=QUEUED, progress=0.0, history=[],
               enqueued_at=utcnow(), **fields)


def _insert(*, session: Session, project: str, spec: JobSpec,
           quota_defaults: dict[str, int] | None = None, weights_dir: Path | None = None,
           max_devices: int | None = None) -> Job:
    """Validate and insert a queued job.

    quota_defaults: the settings' quotas; refuse (429) a job past the project's queued_jobs
    or models quota (each active job counts as the model it will make).
    """
    fields = validate_spec(session=session, project=project, spec=spec, weights_dir=weights_dir,
                           max_devices=max_devices)
    if quota_defaults is not None:
        quotas.check(session=session, project=project, defaults=quota_defaults,
                     adding={"queued_jobs": 1, "models": 1})
    job = new_queued(project=project, **fields)
    session.add(job)
    session.flush()
    return job


@dataclass(frozen=True)
class NeededBlob:
    """A blob a job reads: its key, what it is (for messages) and the request field naming it."""

    key: str
    what: str
    field: str


def _needed_blobs(*, session: Session, job: Job) -> list[NeededBlob]:
    """The blobs a job will read: its dataset's file, and a backbone model's artifact."""
    out = []
    dataset = session.get(Dataset, job.dataset_id)
    if dataset is not None:
        out.append(NeededBlob(dataset.blob_key, f"dataset {dataset.id}", "dataset_id"))
    backbone = (job.params or {}).get("backbone")
    if isinstance(backbone, str) and backbone.startswith(MODEL_PREFIX):
        model = session.get(Model, backbone[len(MODEL_PREFIX):])
        if model is not None:
            out.append(NeededBlob(model.artifact_key, f"backbone model {model.id}",
                                  "params.backbone"))
    return out


def get(*, session: Session, project: str, job_id: str) -> Job:
    """One job of the project, or NotFound."""
    return owned(session, Job, job_id, project=project, what="job")


def list_(*, session: Session, project: str, limit: int, offset: int,
          status: str | None = None) -> tuple[list[Job], int]:
    """A page of the project's jobs, newest first, and the total count."""
    where = [Job.project == project] + ([Job.status == status] if status else [])
    return page(session, Job, where, limit=limit, offset=offset)


def request_cancel(*, session: Session, project: str, job_id: str) -> Job:
    """Cancel a queued job at once; flag a running one so its worker stops between steps."""
    job = get(session=session, project=project, job_id=job_id)
    if job.status in TERMINAL:
        return job
    now = utcnow()
    session.execute(update(Job).where(Job.id == job.id).values(cancel_requested=True))
    session.execute(
        update(Job).where(Job.id == job.id, Job.status == QUEUED)
        .values(status=CANCELLED, finished_at=now, error_type="Cancelled",
                error_message="cancelled before it started")
    )
    session.flush()
    session.refresh(job)
    if job.status == CANCELLED:
        job_end.ended(session=session, job=job)
    return job


def count_by_state(*, session: Session) -> list[tuple[str, str, int]]:
    """(status, queue, count) of every job: one GROUP BY, for the metrics scrape."""
    rows = session.execute(select(Job.status, Job.queue, func.count()).group_by(Job.status, Job.queue))
    return [(status, queue, int(n)) for status, queue, n in rows]


def durations(*, session: Session) -> list[tuple[str, str, float]]:
    """(status, queue, seconds from start to end) of every job that ran and ended."""
    rows = session.execute(select(Job.status, Job.queue, Job.started_at, Job.finished_at).where(
        Job.status.in_(TERMINAL), Job.started_at.is_not(None), Job.finished_at.is_not(None)))
    return [(status, queue, max(0.0, (end - start).total_seconds()))
            for status, queue, start, end in rows if start is not None and end is not None]


# ------------------------------------------------------------------ jobs that belong to a group


def prepare_child(*, session: Session, project: str, spec: JobSpec, settings: Settings,
                  store: BlobStore, parent_id: str, quota: bool = True) -> Job:
    """A checked, inserted (uncommitted) job of the group parent_id (a comparison, a sweep).

    The same checks as submit; quota=False when the caller checked the quotas for the whole
    group at once (a comparison is refused whole). The caller sends the job (enqueue) after
    its commit.
    """
    job = _prepare(session, project, spec, settings, store, quota=quota)
    job.parent_id = parent_id
    session.flush()
    return job
