"""What follows a job's end, wherever it ends: the worker (succeeded, failed, cancelled), the
reaper (failed after its last attempt) or a cancel of a queued job.

`ended` runs inside the transaction that moved the job to its terminal status, so what a
listener writes (a webhook delivery to send, a sweep trial's result) commits with the end or
not at all. Listeners only write rows here; anything that talks to the outside (HTTP, the
broker) happens after the commit, from the row they wrote.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.db.tables import Job
from app.services import sweep_trials, webhooks


def ended(*, session: Session, job: Job) -> None:
    """job has just reached a terminal status in session's transaction."""
    sweep_trials.ended(session=session, job=job)  # a sweep's trial: its state and value
    webhooks.job_ended(session=session, job=job)  # the job.*/batch.* deliveries (an outbox)
