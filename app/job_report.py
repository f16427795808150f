"""A job's report while it trains: a heartbeat thread renews the lease and learns about
cancellation; progress, history and checkpoints go to the job row and the blob store."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Self

from app import logs, storage
from app.config import Settings
from app.db.session import session_scope
from app.db.tables import utcnow
from app.ml.base import Cancelled
from app.services import leases
from app.services.leases import Lease
from app.services.sweep_trials import TrialWatch
from app.storage import BlobStore

log = logs.get_logger("pretrainer.runner")  # the runner's lines, wherever they are written


class LeaseLost(Exception):
    """Another worker owns the job now; this one must stop without writing anything."""


class JobTimeout(Exception):
    """The job ran past PRETRAINER_MAX_JOB_SECONDS (all its tries together); it ends failed."""


def set_deadline(report: Any, settings: Settings, started_at: datetime | None) -> None:
    """PRETRAINER_MAX_JOB_SECONDS, counted from the job's first try's start: its retries share
    the budget (any kind of job; nothing to set before the job has started)."""
    if started_at is not None:
        report.deadline = started_at + timedelta(seconds=settings.max_job_seconds)


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
        self.watch: TrialWatch | None = None  # a sweep's trial: the pruner's (set with deadline)
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self._progress: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(settings.heartbeat_seconds,),
                                        daemon=True, name=f"heartbeat-{lease.job_id}")

    def __enter__(self) -> Self:
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
                owned, cancel = leases.heartbeat(session=s, lease=self.lease, progress=self._progress)
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
            if not leases.append_history(session=s, lease=self.lease, entry=entry, since=since):
                self.lost.set()
        self.check()
        if self.watch is not None:
            self.watch.epoch(entry)  # raises Pruned when the sweep's pruner says stop

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
