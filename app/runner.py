"""Run one training job: claim it, load its data, fit, store the artifact, record the outcome."""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from app import logs, storage
from app.config import Settings
from app.data.loaders import load_column, load_images, load_matrix
from app.data.text import is_text_job, load_texts
from app.db.session import session_scope
from app.db.tables import CANCELLED, FAILED, QUEUED, Dataset, Model, new_id, utcnow
from app.errors import QuotaExceeded
from app.ml import registry
from app.ml.base import Cancelled, FitInput
from app.queue import enqueue_train
from app.services import backbones, jobs
from app.services.jobs import Lease
from app.storage import BlobStore, open_store

log = logs.get_logger("pretrainer.runner")


class LeaseLost(Exception):
    """Another worker owns the job now; this one must stop without writing anything."""


class JobTimeout(Exception):
    """The job ran past PRETRAINER_MAX_JOB_SECONDS (all its tries together); it ends failed."""


class AttemptLost(Exception):
    """A rank of a multi-process job died (killed, out of memory): this try is lost, not the
    job; the next try resumes from the last checkpoint."""


class RankFailed(Exception):
    """A rank of a multi-process job raised: the job fails with that rank's error."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# Seconds the ranks get to leave after SIGTERM before the whole group is SIGKILLed.
RANK_STOP_GRACE = 10.0


class JobReport:
    """The Report a fit talks to: progress and history go to the job row, cancel comes back."""

    def __init__(self, settings: Settings, lease: Lease, store: BlobStore) -> None:
        self.url = settings.resolved_database_url
        self.lease = lease
        self.store = store
        self.checkpoint_seconds = settings.checkpoint_seconds
        self._last_checkpoint = time.monotonic()
        self.resuming = False
        self.max_seconds = settings.max_job_seconds
        self.deadline: datetime | None = None  # set once the job row (started_at) is read
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._progress: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(settings.heartbeat_seconds,),
                                        daemon=True, name=f"heartbeat-{lease.job_id}")

    def __enter__(self) -> JobReport:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self, every: float) -> None:
        # The heartbeat renews the lease and learns about cancellation while the fit runs.
        while not self._stop.wait(min(every, 0.5)):
            self._sync()

    def _sync(self) -> None:
        try:
            with session_scope(self.url) as s:
                owned, cancel = jobs.heartbeat(session=s, lease=self.lease, progress=self._progress)
        except Exception:  # a DB blip must not kill training; the next beat retries
            log.warning("job.heartbeat_failed", job_id=self.lease.job_id, exc_info=True)
            return
        if not owned:
            self.lost.set()
        if cancel:
            self.cancelled.set()

    def progress(self, fraction: float) -> None:
        self._progress = max(0.0, min(1.0, float(fraction)))

    def epoch(self, entry: dict[str, Any]) -> None:
        since = None
        if self.resuming:  # the first epoch after a resume says so in the history
            entry = {**entry, "resumed": True, "attempt": self.lease.epoch}
            since = entry.get("epoch")  # epochs the lost try ran past its checkpoint go
            self.resuming = False
        with session_scope(self.url) as s:
            if not jobs.append_history(session=s, lease=self.lease, entry=entry, since=since):
                self.lost.set()
        self.check()

    def checkpoint(self, write: Callable[[Path], None]) -> bool:
        """Write a checkpoint when one is due; a worker that lost its lease writes nothing."""
        self.check()
        if time.monotonic() - self._last_checkpoint < self.checkpoint_seconds:
            return False
        staged = self.store.staging_file()
        try:
            write(staged)
            self.check()  # the lease may have moved while writing
            self.store.replace(staged, storage.checkpoint_key(self.lease.job_id))
        finally:
            staged.unlink(missing_ok=True)
        self._last_checkpoint = time.monotonic()
        return True

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(self.lease.job_id)
        if self.cancelled.is_set():
            raise Cancelled()
        if self.deadline is not None and utcnow() > self.deadline:
            raise JobTimeout(f"the job ran longer than {self.max_seconds:g} s "
                             "(PRETRAINER_MAX_JOB_SECONDS) and was stopped")


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
    url = settings.resolved_database_url
    try:
        with session_scope(url) as s:
            lease = jobs.claim(session=s, job_id=job_id, worker=worker,
                               stale_after=settings.heartbeat_seconds * 3,
                               max_attempts=settings.max_attempts, holder_dead=holder_dead,
                               quota_defaults=settings.quota_defaults)
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
                train_try(settings, lease, report, store)
        except AttemptLost as exc:  # like a killed worker: the next try resumes
            log.warning("job.attempt_lost", job_id=job_id, reason=str(exc))
            with session_scope(url) as s:  # this process held the lease and is done with it
                lease = jobs.claim(session=s, job_id=job_id, worker=worker,
                                   stale_after=settings.heartbeat_seconds * 3,
                                   max_attempts=settings.max_attempts, holder_dead=lambda _: True)
            continue
        except Cancelled:
            _end(url, lease, CANCELLED, ("Cancelled", "cancelled by request"), store)
        except LeaseLost:
            log.warning("job.lease_lost", job_id=job_id)
        except Exception as exc:  # a training error ends the job failed, never stuck running
            log.warning("job.failed", job_id=job_id, exc_info=True)
            kind = exc.kind if isinstance(exc, RankFailed) else type(exc).__name__
            _end(url, lease, FAILED, (kind, _message(exc)), store)
        return


def _later(settings: Settings, job_id: str, exc: QuotaExceeded) -> None:
    """Leave a job over its project's running quota queued, and send it again in a while."""
    with session_scope(settings.resolved_database_url) as s:
        job = jobs.defer(session=s, job_id=job_id)
    if job is None or job.status != QUEUED:
        return
    log.info("job.deferred", job_id=job_id, quota=exc.quota, limit=exc.limit, used=exc.used)
    enqueue_train(settings, job_id, job.queue, countdown=settings.quota_retry_seconds)


def _message(exc: Exception) -> str:
    text = str(exc).strip() or repr(exc)
    return text[:2000]


def _end(url: str, lease: Lease, status: str, error: tuple[str, str], store: BlobStore) -> None:
    with session_scope(url) as s:
        ended = jobs.end(session=s, lease=lease, status=status, error=error)
    if ended:  # a job that ended will not resume: its checkpoint would only be an orphan
        store.delete(storage.checkpoint_key(lease.job_id))
    log.info("job.ended", job_id=lease.job_id, status=status)


@dataclass
class TrainingData:
    """What a fit receives, and the facts about it the model record keeps.

    y holds class indices; labels the labels themselves (class names, or the target's values).
    """

    x: Any
    y: np.ndarray | None
    classes: list[str]
    input_schema: dict[str, Any]
    labels: np.ndarray | None = None


def load_training_data(store: BlobStore, spec: dict[str, Any]) -> TrainingData:
    """Load a job's rows (tabular matrix, uint8 images or texts) and its labels, if any."""
    if spec["kind"] == "image":  # the images' arrays sit beside the ZIP: the whole folder
        x, y, classes = load_images(store.path(posixpath.dirname(spec["blob_key"])))
        height, width, channels = (int(v) for v in x.shape[1:])
        schema = {"kind": "image", "height": height, "width": width, "channels": channels,
                  "dtype": "uint8", "classes": classes}
        labels = np.array(classes, dtype=object)[y] if y is not None else None
        return TrainingData(x, y, classes, schema, labels)
    path = store.path(spec["blob_key"])
    raw = load_column(path, spec["format"], spec["target"]) if spec["target"] else None
    if is_text_job(spec["columns"], spec["features"]):
        texts = load_texts(path, spec["format"], spec["features"][0])
        schema = {"kind": "text", "column": spec["features"][0], "dtype": "string"}
        return TrainingData(np.array(texts, dtype=object), None, [], schema, raw)
    x = load_matrix(path, spec["format"], spec["features"], spec["columns"])
    y, classes = None, []
    if raw is not None:
        values, y = np.unique(raw.astype(str), return_inverse=True)
        classes = [str(v) for v in values]
    by_name = {c["name"]: c for c in spec["columns"]}
    schema = {"kind": "tabular", "dtype": str(x.dtype),
              "features": [{"name": f, "dtype": by_name[f]["dtype"]} for f in spec["features"]]}
    if classes:
        schema["classes"] = classes
    return TrainingData(x, y, classes, schema, raw)


def worker_devices(device: str, settings: Settings) -> tuple[int, str]:
    """How many processes this worker may train one job on, and of what ("GPUs"/"processes")."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        count = torch.cuda.device_count()
        limit = settings.worker_gpus if settings.worker_gpus is not None else count
        return min(count, limit), "GPUs"
    return settings.cpu_processes, "processes"


def job_devices(params: Any, settings: Settings) -> int:
    """params.devices resolved on this worker ("all": every one it has); more is an error."""
    asked = getattr(params, "devices", 1)
    if asked == 1:
        return 1
    have, what = worker_devices(params.device, settings)
    if asked == "all":
        return max(1, have)
    if asked > have:
        raise ValueError(f"params.devices asks for {asked}, but this worker has {have} {what} "
                         "(PRETRAINER_WORKER_GPUS, PRETRAINER_CPU_PROCESSES)")
    return int(asked)


def train_try(settings: Settings, lease: Lease, report: Any, store: BlobStore, *,
           rank: int | None = None) -> None:
    """One try of the job. rank: None trains here (or launches the ranks of a multi-process
    job); 0.. is a rank of one, where rank 0 alone records history, checkpoints and the model."""
    url = settings.resolved_database_url
    with session_scope(url) as s:
        job = jobs.load_for_run(session=s, lease=lease)
        dataset = s.get(Dataset, job.dataset_id)
        if dataset is None:
            raise FileNotFoundError(f"dataset {job.dataset_id} was deleted before the job ran")
        if job.started_at is not None:  # the first try's start: retries share the budget
            report.deadline = job.started_at + timedelta(seconds=settings.max_job_seconds)
        spec = {"algorithm": job.algorithm, "params": job.params, "features": job.features,
                "target": job.target, "project": job.project, "dataset_id": dataset.id,
                "kind": dataset.kind, "format": dataset.format, "columns": dataset.columns,
                "blob_key": dataset.blob_key, "attempts": job.attempts}
    algo = registry.get(spec["algorithm"])
    params = algo.params_model.model_validate(spec["params"])
    if rank is None and (devices := job_devices(params, settings)) > 1:
        _run_ranks(lease, report, devices)
        return
    report.progress(0.01)
    t0 = time.perf_counter()
    data = load_training_data(store, spec)
    report.check()
    t1 = time.perf_counter()
    ref = None
    if (wanted := algo.backbone_of(params)) is not None:
        with session_scope(url) as s:
            ref = backbones.resolve(session=s, project=spec["project"], spec=wanted[0],
                                    pretrained=wanted[1],
                                    weights_dir=settings.resolved_weights_dir,
                                    blob_path=store.path)
    checkpoint = store.path(storage.checkpoint_key(lease.job_id))
    # Only fits that train in epochs write a checkpoint, so only they ever find one.
    resume_from = checkpoint if checkpoint.is_file() else None
    if resume_from is not None:
        report.resuming = True  # an earlier try was lost: continue, don't restart
        log.info("job.resuming", job_id=lease.job_id, attempt=spec["attempts"])
    trained = algo.fit(FitInput(data.x, y=data.y, labels=data.labels, backbone=ref,
                                resume_from=resume_from), params, report)
    if rank:
        return  # rank 0 records the model
    report.check()
    timing = {"load_seconds": round(t1 - t0, 4), "fit_seconds": round(time.perf_counter() - t1, 4)}
    model_id = new_id("mdl")
    key = storage.model_key(model_id)
    with store.staging_dir() as staged:
        trained.save(staged)
        store.publish(staged, key)
    metrics = {**json.loads(json.dumps(trained.metrics, default=float)), **timing}
    schema = dict(data.input_schema)
    task = trained.task
    if task is not None:  # a transfer model answers with its own classes (or values)
        schema["classes"] = task.get("classes") or []
        schema["head"] = task["head"]
    model = Model(
        id=model_id, project=spec["project"], algorithm=algo.name, family=algo.family,
        job_id=lease.job_id, dataset_id=spec["dataset_id"], params=spec["params"],
        input_schema=schema, capabilities=list(algo.capabilities), metrics=metrics,
        artifact_key=key,
        backbone_model_id=ref.name if ref is not None and ref.source == "model" else None,
        lineage=backbones.lineage(ref, model_id=model_id, job_id=lease.job_id,
                                  dataset_id=spec["dataset_id"]) if ref is not None else {},
    )
    report.check()
    with session_scope(url) as s:
        if not jobs.succeed(session=s, lease=lease, model=model, metrics=metrics):
            store.delete(key)  # the lease moved on: this try's artifact must not survive
            raise LeaseLost(lease.job_id)
    store.delete(storage.checkpoint_key(lease.job_id))  # the model supersedes the job's checkpoint
    log.info("job.succeeded", job_id=lease.job_id, model_id=model_id)


def rank_command(lease: Lease, devices: int, run_dir: Path) -> list[str]:
    """torchrun on this machine: `devices` ranks of app.ranks for one try of the job."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={devices}", "--max-restarts=0", "-m", "app.ranks",
            lease.job_id, str(lease.epoch), lease.worker, str(run_dir)]


def _run_ranks(lease: Lease, report: JobReport, devices: int) -> None:
    """Run the job's ranks under torchrun in their own process group and watch them: cancel,
    a lost lease or the time limit stop them all; a rank's death loses this try."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{lease.job_id}-ranks-"))
    log.info("job.ranks", job_id=lease.job_id, devices=devices)
    # Its own session: a stop signals every rank at once; a Celery prefork child cannot
    # start multiprocessing children itself (they would be daemonic).
    proc = subprocess.Popen(rank_command(lease, devices, run_dir), start_new_session=True,
                            preexec_fn=die_with_parent)
    try:
        while proc.poll() is None:
            report.check()
            time.sleep(0.2)
        if proc.returncode != 0:
            report.check()
            _rank_outcome(run_dir, proc.returncode)
    finally:
        stop_group(proc)
        shutil.rmtree(run_dir, ignore_errors=True)


def _rank_outcome(run_dir: Path, code: int) -> None:
    """Raise what the ranks' error files say: a training error fails the job; a comms error
    or a rank that left nothing (killed) loses the try."""
    errors = sorted((json.loads(p.read_text()) for p in run_dir.glob("rank-*.json")),
                    key=lambda e: e["rank"])
    for e in errors:
        if e["type"] == "Cancelled":
            raise Cancelled()
        if e["type"] == "LeaseLost":
            raise LeaseLost(e["message"])
        if e["type"] == "JobTimeout":
            raise JobTimeout(e["message"])
    real = [e for e in errors if not e["lost"]]
    if real:
        raise RankFailed(real[0]["type"], real[0]["message"])
    raise AttemptLost(f"a rank stopped (torchrun exit code {code}); "
                      f"{len(errors)} rank(s) reported: "
                      + "; ".join(f"rank {e['rank']}: {e['message'][:200]}" for e in errors))


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group of proc, then SIGKILL whatever is left of it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=RANK_STOP_GRACE)
        except subprocess.TimeoutExpired:
            continue
    try:  # the agent is gone: its ranks may not be
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphaned ranks)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
