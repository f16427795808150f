"""A sweep's trials as its rows record them: what a trial's end writes (called from
app.services.job_end in the ending transaction), the records the search is rebuilt from, and
the pruning watch a worker keeps on a running trial.

Kept apart from app.services.sweeps, which submits trial jobs through app.services.jobs: the
job-end hook imports this module, and jobs imports the hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import search
from app.db.session import session_scope
from app.db.tables import CANCELLED, Job, Sweep, SweepTrial

# The error type of a trial's job that the pruner stopped: it ends `cancelled` (a job has the
# contract's five statuses) and its trial `pruned`.
PRUNED_ERROR = "Pruned"


class Pruned(Exception):
    """The sweep's pruner stopped this trial: its metric lags the other trials' at this epoch."""


def plan(sweep: Sweep) -> search.Plan:
    """How sweep searches, from its row."""
    return search.Plan(space=sweep.space, direction=sweep.direction, sampler=sweep.sampler,
                       seed=sweep.seed, trials=sweep.trials, pruner=sweep.pruner)


def state_of(job: Job) -> str:
    """A trial's state once its job ended: the job's status, or pruned."""
    return search.PRUNED if job.status == CANCELLED and job.error_type == PRUNED_ERROR \
        else job.status


def ended(*, session: Session, job: Job) -> None:
    """Record a trial's end (state, value, per-epoch values, seconds) in the transaction that
    ends its job; nothing for a job that is no sweep's trial."""
    if job.parent_id is None:
        return
    trial = session.get(SweepTrial, job.id)
    sweep = session.get(Sweep, job.parent_id)
    if trial is None or sweep is None:
        return  # a comparison's job, say
    trial.state = state_of(job)
    trial.steps = {str(k): v for k, v in search.epoch_values(sweep.metric, job.history).items()}
    trial.value = search.trial_value(sweep.metric, sweep.direction, job.metrics or {},
                                     job.history or []) \
        if trial.state in (search.SUCCEEDED, search.PRUNED) else None
    if job.started_at is not None and job.finished_at is not None:
        trial.seconds = round((job.finished_at - job.started_at).total_seconds(), 3)
    session.flush()


def rows(*, session: Session, sweep_id: str) -> list[tuple[SweepTrial, Job]]:
    """The sweep's trials with their jobs, by trial number."""
    found = session.execute(
        select(SweepTrial, Job).join(Job, Job.id == SweepTrial.job_id)
        .where(SweepTrial.sweep_id == sweep_id).order_by(SweepTrial.number))
    return [(t, j) for t, j in found]


def record(trial: SweepTrial) -> search.Record:
    """A trial row as the search reads it."""
    return search.Record(params=trial.params, state=trial.state, value=trial.value,
                         steps={int(k): float(v) for k, v in (trial.steps or {}).items()})


@dataclass
class TrialWatch:
    """The pruner's eye on one running trial: after each epoch, its metric so far against the
    sweep's other trials (read afresh, so trials that ended meanwhile count)."""

    url: str
    sweep_id: str
    job_id: str
    metric: str
    params: dict[str, Any]
    steps: dict[int, float] = field(default_factory=dict)
    last_epoch: int | None = None  # the trial's `epochs` param, when it has one

    def epoch(self, entry: dict[str, Any]) -> None:
        """Take one epoch's entry; raise Pruned when the pruner says stop. The last epoch is
        never pruned: the trial has run its course, and its value counts as it is."""
        self.steps.update(search.epoch_values(self.metric, [entry]))
        if self.last_epoch is not None and self.steps and max(self.steps) >= self.last_epoch:
            return
        with session_scope(self.url) as s:
            sweep = s.get(Sweep, self.sweep_id)
            if sweep is None or sweep.pruner is None:
                return
            others = [record(t) for t, _ in rows(session=s, sweep_id=self.sweep_id)
                      if t.job_id != self.job_id]
            how = plan(sweep)
        if search.should_prune(how, others, self.params, self.steps):
            step = max(self.steps)
            raise Pruned(f"pruned at epoch {step}: {self.metric} {self.steps[step]:.6g} lags "
                         "the median of the sweep's finished trials at this epoch")


def watch(*, session: Session, url: str, job: Job) -> TrialWatch | None:
    """The pruning watch of a sweep trial's job whose sweep prunes; None for any other job
    (no query for a job without a parent)."""
    if job.parent_id is None:
        return None
    trial = session.get(SweepTrial, job.id)
    sweep = session.get(Sweep, job.parent_id)
    if trial is None or sweep is None or sweep.pruner is None:
        return None
    epochs = (job.params or {}).get("epochs")
    return TrialWatch(url=url, sweep_id=sweep.id, job_id=job.id, metric=sweep.metric,
                      params=dict(trial.params),
                      steps=search.epoch_values(sweep.metric, job.history or []),
                      last_epoch=epochs if isinstance(epochs, int) else None)
