"""Leases: a worker claims a job, renews it by heartbeat, and ends it; the reaper takes back
the jobs of workers that stopped answering.

Every write is conditional on the lease epoch the writer holds, so a worker that lost its
job (reaped, cancelled, claimed again) can write nothing more to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Update, case, func, select, update
from sqlalchemy.orm import Session

from app.db.tables import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    Job,
    Model,
    utcnow,
)
from app.services import job_end, quotas


def _changed(session: Session, statement: Update) -> int:
    """Rows an UPDATE changed: how a conditional write learns whether it won."""
    result = cast("CursorResult[Any]", session.execute(statement))
    return int(result.rowcount)


@dataclass(frozen=True)
class Lease:
    """Proof that this worker owns this try of the job."""

    job_id: str
    epoch: int
    worker: str


def claim(*, session: Session, job_id: str, worker: str, stale_after: float,
          max_attempts: int, holder_dead: Callable[[str], bool] = lambda _: False,
          quota_defaults: dict[str, int] | None = None) -> Lease | None:
    """Take the job if nobody alive holds it; None means this delivery has nothing to do.

    holder_dead(worker) tells whether a holder is known dead (a process of this host that no
    longer exists), so a redelivery after a killed child resumes at once instead of waiting
    for the heartbeat to go stale. quota_defaults: the settings' quotas; a job whose project
    already trains its running_jobs quota stays queued (QuotaExceeded) for a later delivery.
    """
    job = session.get(Job, job_id)
    if job is None or job.status in TERMINAL:
        return None
    now = utcnow()
    heartbeat = job.heartbeat_at
    fresh = heartbeat is not None and now - heartbeat < timedelta(seconds=stale_after)
    if job.status == RUNNING and fresh and not (job.worker and holder_dead(job.worker)):
        return None  # a redelivery while the first worker is still training (celery#5935)
    if job.cancel_requested:
        _finish(session, job, job.lease_epoch, CANCELLED, error=("Cancelled", "cancelled by request"))
        return None
    if job.attempts >= max_attempts:
        message = (f"gave up after {job.attempts} attempts: the worker was lost each time "
                   "(killed, out of memory or crashed) while training this job")
        _finish(session, job, job.lease_epoch, FAILED, error=("WorkerLost", message))
        return None
    if quota_defaults is not None:
        _check_running(session, job, quota_defaults)
    epoch = job.lease_epoch + 1
    taken = _changed(session, update(Job).where(
        Job.id == job_id, Job.lease_epoch == job.lease_epoch)
        .values(status=RUNNING, lease_epoch=epoch, worker=worker, heartbeat_at=now,
                attempts=Job.attempts + 1, started_at=func.coalesce(Job.started_at, now)))
    session.flush()
    return Lease(job_id, epoch, worker) if taken == 1 else None


def _check_running(session: Session, job: Job, defaults: dict[str, int]) -> None:
    """QuotaExceeded when the job's project already trains as many jobs as it may."""
    quotas.lock(session=session, project=job.project)  # two workers claiming: one at a time
    limit = quotas.limits(session=session, project=job.project, defaults=defaults)["running_jobs"]
    running = session.scalar(select(func.count()).select_from(Job).where(
        Job.project == job.project, Job.status == RUNNING, Job.id != job.id)) or 0
    if running >= limit:
        raise quotas.exceeded("running_jobs", limit=limit, used=running)


def defer(*, session: Session, job_id: str) -> Job | None:
    """A queued job left for later (a quota): note when its next message is sent."""
    session.execute(update(Job).where(Job.id == job_id, Job.status == QUEUED)
                    .values(enqueued_at=utcnow()))
    session.flush()
    return session.get(Job, job_id)


def heartbeat(*, session: Session, lease: Lease, progress: float | None = None) -> tuple[bool, bool]:
    """Renew the lease, raise (never lower) the progress; return (still_owner, cancel_requested)."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        # In the UPDATE itself, so that no reader sees progress go backwards: a resumed try
        # counts again from its checkpoint (or from zero), below where the lost try got to.
        values["progress"] = case((Job.progress > progress, Job.progress), else_=progress)
    owned = _changed(session, update(Job).where(
        Job.id == lease.job_id, Job.lease_epoch == lease.epoch, Job.status == RUNNING)
        .values(**values)) == 1
    cancel = bool(session.scalar(select(Job.cancel_requested).where(Job.id == lease.job_id)))
    return owned, cancel


def append_history(*, session: Session, lease: Lease, entry: dict[str, Any],
                   since: int | None = None) -> bool:
    """Add one epoch's entry to the job's history; False if the lease is lost.

    since: drop entries of this epoch and later first (a resumed try redoes them).
    """
    job = session.get(Job, lease.job_id)
    if job is None or job.lease_epoch != lease.epoch:
        return False
    kept = [e for e in job.history if since is None or e.get("epoch", 0) < since]
    job.history = [*kept, entry]
    session.flush()
    return True


def reap(*, session: Session, stale_after: float, max_attempts: int) -> list[Job]:
    """Running jobs whose heartbeat stopped: requeue them (returned) or fail poison jobs.

    Each change is conditional on the lease epoch it read, so two reapers (API replicas) or a
    worker that comes back cannot both win; bumping the epoch fences the vanished worker off.
    """
    cutoff = utcnow() - timedelta(seconds=stale_after)
    stale = session.scalars(select(Job).where(Job.status == RUNNING, Job.heartbeat_at < cutoff)).all()
    requeued = []
    for job in stale:
        values: dict[str, Any] = {"lease_epoch": job.lease_epoch + 1, "worker": None}
        if job.attempts >= max_attempts:
            values.update(status=FAILED, finished_at=utcnow(), error_type="WorkerLost",
                          error_message=f"its worker stopped answering on each of {job.attempts} "
                          "attempts (killed, out of memory or partitioned); not retried again")
        else:
            values.update(status=QUEUED, enqueued_at=utcnow())
        won = _changed(session, update(Job).where(
            Job.id == job.id, Job.lease_epoch == job.lease_epoch, Job.status == RUNNING)
            .values(**values)) == 1
        if won and values["status"] == QUEUED:
            requeued.append(job)
        elif won:
            session.refresh(job)
            job_end.ended(session=session, job=job)
    session.flush()
    return requeued


def resend_queued(*, session: Session, older_than: float) -> list[Job]:
    """Queued jobs whose message was sent longer ago than older_than: mark them sent again now.

    A message can be lost (a broker restarted without persistence, an enqueue that failed
    after the commit); the row still says queued, so the job is sent again. A duplicate
    message is harmless: the lease lets only one delivery train, and none after the end.
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=older_than)
    waiting = session.scalars(select(Job).where(
        Job.status == QUEUED, func.coalesce(Job.enqueued_at, Job.created_at) < cutoff)).all()
    resent = []
    for job in waiting:
        won = _changed(session, update(Job).where(
            Job.id == job.id, Job.status == QUEUED,
            func.coalesce(Job.enqueued_at, Job.created_at) < cutoff)
            .values(enqueued_at=now)) == 1
        if won:
            resent.append(job)
    session.flush()
    return resent


def load_for_run(*, session: Session, lease: Lease) -> Job:
    """The job row as the worker needs it."""
    job = session.get(Job, lease.job_id)
    assert job is not None
    return job


def succeed(*, session: Session, lease: Lease, model: Model, metrics: dict[str, Any]) -> bool:
    """Record the model and end the job succeeded; False (nothing written) if the lease is lost."""
    job = session.get(Job, lease.job_id, with_for_update=True)
    if job is None or job.lease_epoch != lease.epoch or job.status != RUNNING:
        return False
    session.add(model)
    job.model_id = model.id
    job.metrics = {**(job.metrics or {}), **metrics}  # keeps what the job said at creation
    job.progress = 1.0
    _finish(session, job, lease.epoch, SUCCEEDED)
    return True


def complete(*, session: Session, lease: Lease, metrics: dict[str, Any],
             result_key: str | None = None) -> bool:
    """End a job that makes no model (batch, index, …) succeeded, with its metrics and the blob
    it wrote; False (nothing written) if the lease is lost."""
    job = session.get(Job, lease.job_id, with_for_update=True)
    if job is None or job.lease_epoch != lease.epoch or job.status != RUNNING:
        return False
    job.result_key = result_key
    job.metrics = {**(job.metrics or {}), **metrics}
    job.progress = 1.0
    _finish(session, job, lease.epoch, SUCCEEDED)
    return True


def end(*, session: Session, lease: Lease, status: str, error: tuple[str, str] | None) -> bool:
    """End the job failed or cancelled, if this worker still holds it."""
    job = session.get(Job, lease.job_id, with_for_update=True)
    if job is None or job.lease_epoch != lease.epoch or job.status != RUNNING:
        return False
    _finish(session, job, lease.epoch, status, error=error)
    return True


def _finish(session: Session, job: Job, epoch: int, status: str,
            error: tuple[str, str] | None = None) -> None:
    job.status = status
    job.finished_at = utcnow()
    job.lease_epoch = epoch
    if error:
        job.error_type, job.error_message = error
    session.flush()
    job_end.ended(session=session, job=job)
