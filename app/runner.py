"""One job's life in the worker: claim it, load what it trains on, fit, record the model.

Every outcome ends in the job row. The report thread is app.job_report, what a job trains on
app.data.training, the model record app.services.models, and a job trained on several
processes app.ranks.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import logs, storage
from app.config import Settings
from app.data import training
from app.data.training import JobData, Loaded
from app.db.session import session_scope
from app.db.tables import CANCELLED, FAILED, QUEUED, TRAIN, Dataset, Model
from app.errors import QuotaExceeded
from app.job_report import JobReport, LeaseLost, set_deadline
from app.ml import registry, reproduce
from app.ml.base import Algorithm, BackboneRef, Cancelled, FitInput, Trained
from app.queue import enqueue_train
from app.ranks import AttemptLost, RankFailed, job_devices, run_ranks
from app.services import backbones, leases, models, sweep_trials, sweeps
from app.services import reproduce as reproductions
from app.services.leases import Lease
from app.storage import BlobStore, open_store

log = logs.get_logger("pretrainer.runner")


def worker_id() -> str:
    """Who holds a lease: this host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def holder_dead(worker: str) -> bool:
    """True when the lease holder was a process of this host that no longer runs."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine: only its heartbeat can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def run_job(job_id: str, *, settings: Settings, worker: str) -> None:
    """Train job_id if this delivery should; every outcome ends in the job row."""
    _run_job(job_id, settings=settings, worker=worker)
    # After the end committed: a sweep's trial ended, so its sweep starts the next one.
    sweeps.after_job(settings=settings, store=None, job_id=job_id)


def _run_job(job_id: str, *, settings: Settings, worker: str) -> None:
    url = settings.resolved_database_url
    try:
        lease = _claim(settings, job_id, worker, holder_dead, quota=True)
    except QuotaExceeded as exc:
        _later(settings, job_id, exc)
        return
    if lease is None:
        log.info("job.skipped", job_id=job_id)
        return
    store = open_store(settings)
    while lease is not None:
        log.info("job.started", job_id=job_id, epoch=lease.epoch)
        try:
            with JobReport(settings, lease, store) as report:
                run_try(settings, lease, report, store)
        except AttemptLost as exc:  # like a killed worker: the next try resumes
            log.warning("job.attempt_lost", job_id=job_id, reason=str(exc))
            # This process held the lease and is done with it: the next try may start now.
            lease = _claim(settings, job_id, worker, lambda _: True, quota=False)
            continue
        except sweep_trials.Pruned as exc:  # a sweep's lagging trial: stopped like a cancel
            _end(url, lease, CANCELLED, (sweep_trials.PRUNED_ERROR, str(exc)), store)
        except Cancelled:
            _end(url, lease, CANCELLED, ("Cancelled", "cancelled by request"), store)
        except LeaseLost:
            log.warning("job.lease_lost", job_id=job_id)
        except Exception as exc:  # a training error ends the job failed, never stuck running
            log.warning("job.failed", job_id=job_id, exc_info=True)
            kind = exc.kind if isinstance(exc, RankFailed) else type(exc).__name__
            _end(url, lease, FAILED, (kind, _message(exc)), store)
        return


def _claim(settings: Settings, job_id: str, worker: str, dead: Callable[[str], bool], *,
           quota: bool) -> Lease | None:
    """Take the job's lease (see leases.claim); quota: hold a job over its project's running
    quota back (QuotaExceeded)."""
    with session_scope(settings.resolved_database_url) as s:
        return leases.claim(session=s, job_id=job_id, worker=worker,
                            stale_after=settings.heartbeat_seconds * 3,
                            max_attempts=settings.max_attempts, holder_dead=dead,
                            quota_defaults=settings.quota_defaults if quota else None)


def _later(settings: Settings, job_id: str, exc: QuotaExceeded) -> None:
    """Leave a job over its project's running quota queued, and send it again in a while."""
    with session_scope(settings.resolved_database_url) as s:
        job = leases.defer(session=s, job_id=job_id)
    if job is None or job.status != QUEUED:
        return
    log.info("job.deferred", job_id=job_id, quota=exc.quota, limit=exc.limit, used=exc.used)
    enqueue_train(settings, job_id, job.queue, countdown=settings.quota_retry_seconds)


def _message(exc: Exception) -> str:
    text = str(exc).strip() or repr(exc)
    return text[:2000]


def _end(url: str, lease: Lease, status: str, error: tuple[str, str], store: BlobStore) -> None:
    with session_scope(url) as s:
        ended = leases.end(session=s, lease=lease, status=status, error=error)
    if ended:  # a job that ended will not resume: its checkpoint would only be an orphan
        store.delete(storage.checkpoint_key(lease.job_id))
    log.info("job.ended", job_id=lease.job_id, status=status)


# What each kind of job runs besides training (train_try): a module of app.runs with
# run(settings, lease, report, store), imported when the first job of its kind arrives.
KINDS = {"batch": "app.runs.batch", "index": "app.runs.index"}


def run_try(settings: Settings, lease: Lease, report: Any, store: BlobStore) -> None:
    """One try of the job, by its kind."""
    with session_scope(settings.resolved_database_url) as s:
        kind = leases.load_for_run(session=s, lease=lease).kind or TRAIN
    if kind not in KINDS:
        train_try(settings, lease, report, store)
        return
    importlib.import_module(KINDS[kind]).run(settings, lease, report, store)


@dataclass(frozen=True)
class JobFacts:
    """What one try reads from the job row: the algorithm, its params, and its data."""

    algorithm: str
    params: dict[str, Any]
    project: str
    attempts: int
    data: JobData
    # The seed the job runs under: its seed param once resolved, else the source model's (a
    # reproduce job) or one fixed by the job id (app.ml.reproduce.resolve_seed).
    seed: int = 0
    dataset_sha256: str = ""
    # A reproduce job's source model, compared with once this job's model is published.
    source: reproductions.Source | None = None


def train_try(settings: Settings, lease: Lease, report: Any, store: BlobStore, *,
              rank: int | None = None) -> None:
    """One try of the job. rank: None trains here (or launches the ranks of a multi-process
    job); 0.. is a rank of one, where rank 0 alone records history, checkpoints and the model."""
    facts = _read_job(settings, lease, report)
    algo = registry.get(facts.algorithm)
    resolved, seed = reproduce.resolve_seed(algo.params_model, facts.params, facts.seed)
    facts = dataclasses.replace(facts, params=resolved, seed=seed)
    params = algo.params_model.model_validate(facts.params)
    if rank is None and (devices := job_devices(params, settings)) > 1:
        run_ranks(lease, report, devices)
        return
    report.progress(0.01)
    t0 = time.perf_counter()
    data = training.load(facts.data, store.path)
    report.check()
    t1 = time.perf_counter()
    ref = _backbone(settings, facts, wanted, store) if (wanted := algo.backbone_of(params)) else None
    reproduce.seed_everything(facts.seed)  # for draws no seed param reaches
    trained = algo.fit(FitInput(data.x, y=data.y, labels=data.labels, backbone=ref,
                                resume_from=_resume_from(lease, report, store, facts)),
                       params, report)
    if rank:
        return  # rank 0 records the model
    report.check()
    timing = {"load_seconds": round(t1 - t0, 4), "fit_seconds": round(time.perf_counter() - t1, 4)}
    _record(settings, lease, report, store, algo, trained, facts, data, timing, ref)


def _read_job(settings: Settings, lease: Lease, report: Any) -> JobFacts:
    with session_scope(settings.resolved_database_url) as s:
        job = leases.load_for_run(session=s, lease=lease)
        dataset = s.get(Dataset, job.dataset_id)
        if dataset is None:
            raise FileNotFoundError(f"dataset {job.dataset_id} was deleted before the job ran")
        set_deadline(report, settings, job.started_at)
        if isinstance(report, JobReport):  # a sweep's trial: its pruner watches each epoch
            report.watch = sweep_trials.watch(session=s, url=settings.resolved_database_url,
                                              job=job)
        data = training.of_job(dataset, features=job.features, target=job.target)
        source = reproductions.source_of(session=s, job=job)
        seed = source.seed if source is not None else None  # a rerun keeps the original's
        if seed is None:
            seed = reproduce.job_seed(job.id)
        return JobFacts(job.algorithm, job.params, job.project, job.attempts, data, seed=seed,
                        dataset_sha256=dataset.sha256, source=source)


def _backbone(settings: Settings, facts: JobFacts, wanted: tuple[str, bool],
              store: BlobStore) -> BackboneRef:
    with session_scope(settings.resolved_database_url) as s:
        return backbones.resolve(session=s, project=facts.project, spec=wanted[0],
                                 pretrained=wanted[1],
                                 weights_dir=settings.resolved_weights_dir, blob_path=store.path)


def _resume_from(lease: Lease, report: Any, store: BlobStore, facts: JobFacts) -> Path | None:
    """The checkpoint of an earlier, lost try: continue from it, don't restart (only fits that
    train in epochs write one, so only they ever find one)."""
    checkpoint = store.path(storage.checkpoint_key(lease.job_id))
    if not checkpoint.is_file():
        return None
    report.resuming = True
    log.info("job.resuming", job_id=lease.job_id, attempt=facts.attempts)
    return checkpoint


def _record(settings: Settings, lease: Lease, report: Any, store: BlobStore, algo: Algorithm,
            trained: Trained, facts: JobFacts, data: Loaded, timing: dict[str, float],
            ref: BackboneRef | None) -> None:
    """Publish the model and end the job succeeded, if this worker still holds it."""
    origin = models.Origin(project=facts.project, job_id=lease.job_id,
                           dataset_id=facts.data.dataset_id, params=facts.params)
    model = models.publish(store=store, algo=algo, trained=trained, origin=origin,
                           input_schema=data.input_schema, timing=timing, backbone=ref,
                           record=_reproducibility(settings, facts, data, trained, ref))
    metrics = {**model.metrics, **_compared(store, facts.source, model)}
    report.check()
    with session_scope(settings.resolved_database_url) as s:
        if not leases.succeed(session=s, lease=lease, model=model, metrics=metrics):
            store.delete(model.artifact_key)  # the lease moved on: this try's artifact must go
            raise LeaseLost(lease.job_id)
    store.delete(storage.checkpoint_key(lease.job_id))  # the model supersedes the checkpoint
    log.info("job.succeeded", job_id=lease.job_id, model_id=model.id)


def _reproducibility(settings: Settings, facts: JobFacts, data: Loaded, trained: Trained,
                     ref: BackboneRef | None) -> dict[str, Any]:
    """The model's record (publish adds the artifact's hashes): what a rerun needs to train the
    same model, and what may explain a difference."""
    dataset = {"id": facts.data.dataset_id, "sha256": facts.dataset_sha256,
               "n_rows": len(data.x), "features": list(facts.data.features),
               "target": facts.data.target, "n_features": facts.data.n_features}
    backbone = {"spec": ref.spec, "sha256": ref.sha256} if ref is not None else None
    return {"params": facts.params, "seed": facts.seed, "dataset": dataset,
            "versions": reproduce.versions(settings.git_commit),
            **reproduce.device_of(trained), "backbone": backbone}


def _compared(store: BlobStore, source: reproductions.Source | None,
              model: Model) -> dict[str, Any]:
    """A reproduce job's verdict on its model against the source's (nothing for other jobs)."""
    if source is None:
        return {}
    found = reproduce.compare(source.record.get("artifact_sha256", {}),
                              store.path(model.artifact_key),
                              lambda: store.path(source.artifact_key))
    return found.metrics()
