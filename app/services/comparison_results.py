"""What a comparison's child jobs say, derived on every read: its status, a row per
(backbone, pretrained) with the held-out metric of each seed, and per backbone the paired
difference to scratch with its 95% t-interval.

Nothing here is stored: the child jobs are the truth, so a retried or cancelled child shows
at once. Kept apart from app.services.comparisons (which submits jobs) so that a job's end can
ask whether its comparison ended without importing the job submission.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.tables import (
    ACTIVE,
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Comparison,
    Job,
)

# The two-sided confidence level of the deltas' intervals.
# A comparison's id is new_id(ID_PREFIX): a job whose parent_id starts so is one of its jobs.
ID_PREFIX = "cmp"
CONFIDENCE = 0.95
NO_INTERVAL = "one paired seed: an interval needs at least two (ask for more seeds)"
NO_PAIR = "no seed where both the pretrained and the scratch job succeeded"


@dataclass(frozen=True)
class Row:
    """The metric of one (backbone, pretrained) over the seeds (None: that job gave none)."""

    backbone: str
    pretrained: bool
    values: list[float | None]
    job_ids: list[str | None]
    mean: float | None
    std: float | None
    n: int


@dataclass(frozen=True)
class Delta:
    """Pretrained minus scratch for one backbone, paired by seed, with its 95% t-interval."""

    backbone: str
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    n_pairs: int
    differences: list[float]
    note: str | None


@dataclass(frozen=True)
class Result:
    """A comparison as its children say now."""

    status: str
    counts: dict[str, int]
    rows: list[Row] = field(default_factory=list)
    deltas: list[Delta] = field(default_factory=list)


def is_child(job: Job) -> bool:
    """Whether the job is one of a comparison's jobs (not a sweep's trial, not alone)."""
    return bool(job.parent_id and job.parent_id.startswith(f"{ID_PREFIX}_"))


def children(*, session: Session, comparison_id: str) -> list[Job]:
    """The comparison's jobs, oldest first."""
    return list(session.scalars(select(Job).where(Job.parent_id == comparison_id)
                                .order_by(Job.created_at, Job.id)).all())


def derive(comparison: Comparison, jobs: list[Job]) -> Result:
    """Status, rows and deltas of comparison from its child jobs."""
    by_cell = {(j.params.get("backbone"), bool(j.params.get("pretrained")),
                j.params.get("seed")): j for j in jobs}
    rows = [_row(comparison, by_cell, backbone, pretrained)
            for backbone in comparison.backbones for pretrained in (True, False)]
    deltas = [_delta(backbone, rows[2 * i].values, rows[2 * i + 1].values)
              for i, backbone in enumerate(comparison.backbones)]
    counts = {s: sum(j.status == s for j in jobs) for s in (QUEUED, RUNNING, SUCCEEDED,
                                                             FAILED, CANCELLED)}
    return Result(_status(comparison, jobs, deltas), counts, rows, deltas)


def _status(comparison: Comparison, jobs: list[Job], deltas: list[Delta]) -> str:
    if any(j.status in ACTIVE for j in jobs):
        return QUEUED if all(j.status == QUEUED for j in jobs) else RUNNING
    if any(d.n_pairs for d in deltas):
        return SUCCEEDED
    return CANCELLED if comparison.cancel_requested else FAILED


def value_of(job: Job | None, metric: str) -> float | None:
    """The held-out metric of a child job, or None when it did not succeed with one."""
    if job is None or job.status != SUCCEEDED:
        return None
    value = (job.metrics or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _row(comparison: Comparison, by_cell: dict[tuple[Any, bool, Any], Job], backbone: str,
         pretrained: bool) -> Row:
    cells = [by_cell.get((backbone, pretrained, seed)) for seed in comparison.seeds]
    values = [value_of(job, comparison.metric) for job in cells]
    mean, std = mean_std([v for v in values if v is not None])
    return Row(backbone, pretrained, values, [j.id if j else None for j in cells], mean, std,
               sum(v is not None for v in values))


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1; None below two values)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _delta(backbone: str, pretrained: list[float | None], scratch: list[float | None]) -> Delta:
    diffs = [p - s for p, s in zip(pretrained, scratch, strict=True)
             if p is not None and s is not None]
    if not diffs:
        return Delta(backbone, None, None, None, 0, [], NO_PAIR)
    low, high = t_interval(diffs)
    note = NO_INTERVAL if low is None else None
    return Delta(backbone, sum(diffs) / len(diffs), low, high, len(diffs), diffs, note)


def t_interval(diffs: list[float]) -> tuple[float | None, float | None]:
    """The 95% Student-t interval of the mean of paired differences (None with one pair)."""
    from scipy import stats  # scikit-learn's dependency; loaded only when a result is read

    mean, std = mean_std(diffs)
    if mean is None or std is None:
        return None, None
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(diffs) - 1)) * std / math.sqrt(len(diffs))
    return mean - half, mean + half


def ended_status(*, session: Session, comparison_id: str) -> str | None:
    """The comparison's terminal status once its last job has ended (None while any is active,
    or when there is no such comparison).

    Takes the comparison's row lock first: of two children ending at once, the second to get
    it sees the first's end, so exactly one of them finds the comparison ended.
    """
    comparison = session.scalars(select(Comparison).where(Comparison.id == comparison_id)
                                 .with_for_update()).first()
    if comparison is None:
        return None
    result = derive(comparison, children(session=session, comparison_id=comparison_id))
    return None if result.status in ACTIVE else result.status
