"""The reaper: a running job whose heartbeat stopped is requeued (to resume) or failed."""

from __future__ import annotations

import logging
import threading

from app.config import Settings
from app.db.session import session_scope
from app.queue import enqueue_train
from app.services import jobs

log = logging.getLogger("pretrainer.reaper")


def reap_once(settings: Settings) -> list[str]:
    """One sweep; returns the ids of the jobs sent back to their queue."""
    with session_scope(settings.resolved_database_url) as s:
        requeued = jobs.reap(session=s, stale_after=settings.heartbeat_seconds * 3,
                             max_attempts=settings.max_attempts)
        targets = [(j.id, j.queue) for j in requeued]
    for job_id, queue in targets:  # after commit, as every enqueue
        enqueue_train(settings, job_id, queue)
        log.warning("job.requeued_by_reaper job_id=%s", job_id)
    return [job_id for job_id, _ in targets]


def start(settings: Settings) -> threading.Event:
    """Sweep every PRETRAINER_REAPER_SECONDS in a daemon thread; set the event to stop it."""
    stop = threading.Event()
    if settings.reaper_seconds <= 0:
        return stop

    def loop() -> None:
        while not stop.wait(settings.reaper_seconds):
            try:
                reap_once(settings)
            except Exception:  # a DB blip must not kill the reaper; the next sweep retries
                log.warning("reaper.sweep_failed", exc_info=True)

    threading.Thread(target=loop, daemon=True, name="reaper").start()
    return stop
