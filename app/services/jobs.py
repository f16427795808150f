"""Jobs: created by the API, claimed and finished by workers under a lease on the row."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from app.data.loaders import FeatureError, check_features, left_out
from app.data.text import is_text_job
from app.db.tables import (
    ACTIVE,
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    Dataset,
    Job,
    Model,
    new_id,
    utcnow,
)
from app.errors import Invalid, NotFound, did_you_mean, field_error
from app.ml import registry
from app.services import backbones, datasets, page, quotas


@dataclass(frozen=True)
class JobSpec:
    """What a client asks for in POST /v1/jobs."""

    dataset_id: str
    algorithm: str
    params: dict[str, Any]
    features: list[str] | None = None
    target: str | None = None
    name: str | None = None


def _param_errors(exc: ValidationError, valid: Iterable[str]) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
            message = f"unknown param; {did_you_mean(str(err['loc'][0]), valid)}"
        errors.append({"field": f"params.{loc}" if loc else "params", "message": message})
    return errors


def validate_spec(*, session: Session, project: str, spec: JobSpec,
                  weights_dir: Path | None = None,
                  max_devices: int | None = None) -> dict[str, Any]:
    """Check algorithm, params and the dataset's fit; return the resolved job fields or raise 422.

    weights_dir: where transfer backbones' weights files are (for a transfer job).
    max_devices: the most processes any worker trains one job on (params.devices).
    """
    try:
        algo = registry.get(spec.algorithm)
    except KeyError:
        hint = did_you_mean(spec.algorithm, registry.ALGORITHMS)
        raise Invalid(f"unknown algorithm {spec.algorithm!r}; {hint}",
                      errors=[{"field": "algorithm", "message": f"unknown; {hint}"}])
    try:
        params = algo.params_model.model_validate(spec.params)
    except ValidationError as exc:
        errors = _param_errors(exc, algo.params_model.model_fields)
        raise Invalid("invalid params: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors),
                      errors=errors)
    devices = getattr(params, "devices", 1)
    if max_devices is not None and isinstance(devices, int) and devices > max_devices:
        message = (f"asks for {devices} devices; no worker has more than {max_devices} "
                   "(PRETRAINER_WORKER_GPUS GPUs, PRETRAINER_CPU_PROCESSES processes)")
        raise Invalid(f"invalid params: params.devices: {message}",
                      errors=[{"field": "params.devices", "message": message}])
    try:
        ds = datasets.get(session=session, project=project, dataset_id=spec.dataset_id)
    except NotFound as exc:
        raise Invalid(exc.detail, errors=[{"field": "dataset_id", "message": "no such dataset"}])
    if ds.kind not in algo.data_kinds:
        raise Invalid(f"{algo.name} trains on {', '.join(algo.data_kinds)} data; "
                      f"dataset {ds.id} is {ds.kind}",
                      errors=[{"field": "dataset_id", "message": f"{ds.kind} data does not fit {algo.name}"}])
    target = spec.target
    if algo.backbone_of(params) is not None:
        features, n_features, target = _transfer_fit(session, project, ds, spec, params,
                                                     weights_dir or Path("weights"))
    else:
        features, n_features = _resolve_features(ds, spec)
    problems = algo.check_fit(params, n_rows=ds.n_rows, n_features=n_features)
    if problems:
        # "dataset" problems are about the rows themselves (too many, too few), not a param.
        errors = [{"field": "dataset_id" if f == "dataset" else f"params.{f}", "message": m}
                  for f, m in problems]
        raise Invalid("the params do not fit the dataset: "
                      + "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)
    return {
        "dataset_id": ds.id, "algorithm": algo.name, "family": algo.family, "queue": algo.queue,
        "params": params.model_dump(mode="json"), "features": features,
        "target": target, "name": spec.name, "metrics": _notes(ds, spec, target, features),
    }


def _notes(ds: Dataset, spec: JobSpec, target: str | None,
           features: list[str]) -> dict[str, Any]:
    """What the job says from its creation on: the label-like columns it left out, if any."""
    if ds.kind == "image" or is_text_job(ds.columns, features):
        return {}  # the pixels, or the text column, are what it trains on
    skipped = left_out(ds.columns, spec.features, exclude=[target] if target else [])
    return {"left_out_columns": skipped} if skipped else {}


def _transfer_fit(session: Session, project: str, ds: Dataset, spec: JobSpec, params: Any,
                  weights_dir: Path) -> tuple[list[str], int, str | None]:
    """features, width and target of a transfer job; 422 when backbone, data and labels do
    not go together."""
    ref = backbones.resolve(session=session, project=project, spec=params.backbone,
                            pretrained=params.pretrained, weights_dir=weights_dir)
    kind, features, n_features, target = _transfer_data(ds, spec)
    if ref.data_kind != kind:
        message = (f"backbone {ref.spec} reads {ref.data_kind} data, but this job's data is "
                   f"{kind}; GET /v1/backbones lists backbones by data kind")
        raise Invalid(message, errors=[{"field": "params.backbone", "message": message}])
    if kind == "tabular" and ref.source == "model":
        width = len(ref.input_schema.get("features", [])) or n_features
        if width != n_features:
            message = (f"backbone {ref.spec} takes rows of {width} features; this job has "
                       f"{n_features} ({', '.join(features)})")
            raise Invalid(message, errors=[{"field": "features", "message": message}])
    return features, n_features, target


def _transfer_data(ds: Dataset, spec: JobSpec) -> tuple[str, list[str], int, str | None]:
    """(data kind, features, width, target) of a transfer job; it needs labels."""
    if ds.kind == "image":
        features, n = _resolve_features(ds, spec)
        if not (ds.details or {}).get("labelled"):
            raise field_error("dataset_id", "transfer needs labelled images: a ZIP with one "
                              "folder per class")
        return "image", features, n, None
    names = {c["name"]: c for c in ds.columns}
    text = (ds.details or {}).get("text") or {}
    chosen = spec.features or ([text["column"]] if text.get("column") else None)
    if chosen and is_text_job(ds.columns, chosen):
        target = spec.target or text.get("label_column")
        _check_target(names, target, chosen[0])
        return "text", list(chosen), 1, target
    features, n = _resolve_features(ds, spec)
    _check_target(names, spec.target, None)
    return "tabular", features, n, spec.target


def _check_target(columns: dict[str, Any], target: str | None, text: str | None) -> None:
    if target is None:
        raise field_error("target", "transfer needs labels: name the label column in target")
    if target not in columns:
        raise field_error("target", f'unknown column "{target}"; available: '
                                    f'{", ".join(columns)}')
    if target == text:
        raise field_error("target", f'column "{target}" is the text; the target must be '
                                    "another column")


def _resolve_features(ds: Dataset, spec: JobSpec) -> tuple[list[str], int]:
    """The feature columns of a tabular job (and their count), or the pixel count of images."""
    if ds.kind == "image":
        for name in ("features", "target"):
            if getattr(spec, name):
                raise Invalid(f"{name} does not apply to image datasets: labels come from the "
                              "class folders", errors=[{"field": name, "message": "not for images"}])
        image = (ds.details or {}).get("image", {})
        return [], int(image.get("height", 1) * image.get("width", 1) * image.get("channels", 1))
    names = [c["name"] for c in ds.columns]
    if spec.target and spec.target not in names:
        message = f'unknown column "{spec.target}"; available: {", ".join(names)}'
        raise Invalid(message, errors=[{"field": "target", "message": message}])
    exclude = [spec.target] if spec.target else []
    try:
        features = check_features(ds.columns, spec.features, exclude=exclude)
    except FeatureError as exc:
        raise Invalid(exc.message, errors=[{"field": "features", "message": exc.message}])
    return features, len(features)


def create(*, session: Session, project: str, spec: JobSpec,
           quota_defaults: dict[str, int] | None = None, weights_dir: Path | None = None,
           max_devices: int | None = None) -> Job:
    """Validate and insert a queued job; the caller commits, then enqueues.

    quota_defaults: the settings' quotas; refuse (429) a job past the project's queued_jobs
    or models quota (each active job counts as the model it will make).
    """
    fields = validate_spec(session=session, project=project, spec=spec, weights_dir=weights_dir,
                           max_devices=max_devices)
    if quota_defaults is not None:
        quotas.check(session=session, project=project, defaults=quota_defaults,
                     adding={"queued_jobs": 1, "models": 1})
    job = Job(id=new_id("job"), project=project, status=QUEUED, progress=0.0,
              history=[], enqueued_at=utcnow(), **fields)
    session.add(job)
    session.flush()
    return job


@dataclass(frozen=True)
class NeededBlob:
    """A blob a job reads: its key, what it is (for messages) and the request field naming it."""

    key: str
    what: str
    field: str


def needed_blobs(*, session: Session, job: Job) -> list[NeededBlob]:
    """The blobs a job will read: its dataset's file, and a backbone model's artifact."""
    out = []
    dataset = session.get(Dataset, job.dataset_id)
    if dataset is not None:
        out.append(NeededBlob(dataset.blob_key, f"dataset {dataset.id}", "dataset_id"))
    backbone = (job.params or {}).get("backbone")
    if isinstance(backbone, str) and backbone.startswith(backbones.MODEL_PREFIX):
        model = session.get(Model, backbone[len(backbones.MODEL_PREFIX):])
        if model is not None:
            out.append(NeededBlob(model.artifact_key, f"backbone model {model.id}",
                                  "params.backbone"))
    return out


def get(*, session: Session, project: str, job_id: str) -> Job:
    """One job of the project, or NotFound."""
    row = session.get(Job, job_id)
    if row is None or row.project != project:
        raise NotFound(f"job {job_id} does not exist")
    return row


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
    return job


# ---- worker side: the lease --------------------------------------------------------------


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
    taken = session.execute(
        update(Job).where(Job.id == job_id, Job.lease_epoch == job.lease_epoch)
        .values(status=RUNNING, lease_epoch=epoch, worker=worker, heartbeat_at=now,
                attempts=Job.attempts + 1, started_at=func.coalesce(Job.started_at, now))
    ).rowcount
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
    owned = session.execute(
        update(Job).where(Job.id == lease.job_id, Job.lease_epoch == lease.epoch,
                          Job.status == RUNNING).values(**values)
    ).rowcount == 1
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
        won = session.execute(
            update(Job).where(Job.id == job.id, Job.lease_epoch == job.lease_epoch,
                              Job.status == RUNNING).values(**values)
        ).rowcount == 1
        if won and values["status"] == QUEUED:
            requeued.append(job)
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
        won = session.execute(
            update(Job).where(Job.id == job.id, Job.status == QUEUED,
                              func.coalesce(Job.enqueued_at, Job.created_at) < cutoff)
            .values(enqueued_at=now)).rowcount == 1
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
