"""Sweeps: check and create one, advance it as its trials end, cancel it, end it, read it.

Each trial is an ordinary job (parent_id = the sweep's id) submitted through app.services.jobs,
so any worker on the algorithm's queue runs it, several at once. What a trial's end records is
app.services.sweep_trials; what to try next (Optuna) is app.search.

A sweep advances after a trial's end commits: the worker that ran the trial calls
`after_job`, and the API's reaper thread calls `tick` as a safety net (a lost message, a crash
between the commit and the advance). An advance raises the sweep's `asked` count with a
conditional UPDATE in the transaction that inserts the new trials, so two trial ends advancing
at once cannot both create the next trial; the loser's transaction rolls back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from app import logs, search
from app.config import Settings
from app.db.session import session_scope
from app.db.tables import (
    ACTIVE,
    CANCELLED,
    FAILED,
    RUNNING,
    SUCCEEDED,
    Job,
    Sweep,
    SweepTrial,
    new_id,
    utcnow,
)
from app.errors import (
    Invalid,
    Problem,
    QuotaExceeded,
    did_you_mean,
    field_error,
    field_errors,
)
from app.ml.base import Algorithm
from app.services import jobs, owned, page, webhooks
from app.services.job_checks import JobSpec, algorithm_named, validate_spec
from app.services.sweep_trials import plan, record, rows
from app.storage import BlobStore, open_store

log = logs.get_logger("pretrainer.sweeps")

@dataclass(frozen=True)
class SweepSpec:
    """What a client asks for in POST /v1/sweeps."""

    dataset_id: str
    algorithm: str
    space: dict[str, Any]
    metric: str
    direction: str
    trials: int
    parallelism: int
    params: dict[str, Any] = field(default_factory=dict)
    sampler: str = "auto"
    seed: int = 0
    pruner: dict[str, int] | None = None
    features: list[str] | None = None
    target: str | None = None
    name: str | None = None


class _Raced(Exception):
    """Another advance of the same sweep won: this one's trials must not be created."""


def create(*, session: Session, project: str, spec: SweepSpec, settings: Settings,
           store: BlobStore) -> Sweep:
    """Check the spec, insert the sweep and its first trials, commit, then send them."""
    sweep = _checked(session, project, spec, settings)
    session.add(sweep)
    session.flush()
    made = _open(session, settings, store, sweep, [], min(sweep.parallelism, sweep.trials))
    session.commit()  # the rows exist before any worker can see a message
    for job in made:
        jobs.enqueue(settings, job)
    log.info("sweep.created", sweep_id=sweep.id, trials=sweep.trials, started=len(made))
    return sweep


# --- checks: every refusal a 422 naming the field ---------------------------------------

def _checked(session: Session, project: str, spec: SweepSpec, settings: Settings) -> Sweep:
    algo = algorithm_named(spec.algorithm)
    if spec.trials > settings.max_sweep_trials:
        raise field_error("trials", f"at most {settings.max_sweep_trials} "
                          "(PRETRAINER_MAX_SWEEP_TRIALS)")
    space = _space(algo, spec)
    _check_metric(algo, spec.metric)
    _check_sampler(spec.sampler, space)
    _check_samples(session, project, spec, space, settings)
    return Sweep(id=new_id("swp"), project=project, name=spec.name, dataset_id=spec.dataset_id,
                 algorithm=algo.name, space=space, params=dict(spec.params),
                 features=spec.features, target=spec.target, metric=spec.metric,
                 direction=spec.direction, trials=spec.trials, parallelism=spec.parallelism,
                 sampler=spec.sampler, seed=spec.seed, pruner=spec.pruner, status=RUNNING,
                 asked=0, cancel_requested=False)


def _space(algo: Algorithm, spec: SweepSpec) -> dict[str, dict[str, Any]]:
    """The space checked against the algorithm's params, spelled out (search.normalise)."""
    known = algo.params_model.model_fields
    for key in spec.space:
        if key not in known:
            raise field_error(f"space.{key}", f"not a param of {algo.name}; "
                              f"{did_you_mean(key, known)}")
        if key in spec.params:
            raise field_error(f"params.{key}", "is searched in space; leave it out of params")
    try:
        return search.normalise(spec.space, _integer_params(algo))
    except search.SpaceError as exc:
        raise field_error(f"space.{exc.key}" if exc.key else "space", exc.message) from exc


def _integer_params(algo: Algorithm) -> set[str]:
    """The params whose JSON Schema type is integer (alone, or with null)."""
    props = algo.params_model.model_json_schema().get("properties", {})
    return {key for key, schema in props.items()
            if "integer" in (types := _types(schema)) and "number" not in types}


def _types(schema: dict[str, Any]) -> set[str]:
    return {schema.get("type", "")} | {s.get("type", "") for s in schema.get("anyOf", [])}


def _check_metric(algo: Algorithm, metric: str) -> None:
    if metric not in algo.sweep_metrics:
        raise field_error("metric", f"{algo.name} reports no {metric!r} to optimise; one of: "
                          f"{', '.join(algo.sweep_metrics)}")


def _check_sampler(sampler: str, space: dict[str, dict[str, Any]]) -> None:
    if sampler == "grid" and search.grid_size(space) is None:
        raise field_error("sampler", "grid needs every param of the space as choices")


def _check_samples(session: Session, project: str, spec: SweepSpec,
                   space: dict[str, dict[str, Any]], settings: Settings) -> None:
    """Validate jobs at every choice and at each range's ends and middle, through the checks a
    job submission runs; a refusal of a searched param names its space entry."""
    first = {key: search.samples(entry)[0] for key, entry in space.items()}
    for key, entry in space.items():
        for value in search.samples(entry):
            job = JobSpec(dataset_id=spec.dataset_id, algorithm=spec.algorithm,
                          params={**spec.params, **first, key: value}, features=spec.features,
                          target=spec.target)
            try:
                validate_spec(session=session, project=project, spec=job,
                              weights_dir=settings.resolved_weights_dir,
                              max_devices=settings.max_devices)
            except Invalid as exc:
                raise _as_space_error(exc, space, key, value) from exc


def _as_space_error(exc: Invalid, space: dict[str, Any], key: str, value: Any) -> Invalid:
    """A job check's refusal with params.<searched> renamed space.<searched>."""
    if not exc.errors:
        return Invalid(exc.detail)
    errors = []
    for err in exc.errors:
        name = err["field"].removeprefix("params.")
        if err["field"].startswith("params.") and name in space:
            errors.append((f"space.{name}", f"{value!r} for {key} fails: {err['message']}"))
        else:
            errors.append((err["field"], err["message"]))
    return field_errors(errors)


# --- advancing -------------------------------------------------------------------------

def _open(session: Session, settings: Settings, store: BlobStore, sweep: Sweep,
          found: list[tuple[SweepTrial, Job]], n: int) -> list[Job]:
    """Insert n new trials (params from the search), and raise `asked` if nobody did first."""
    asked = sweep.asked
    sampled = search.ask(plan(sweep), [record(t) for t, _ in found], n)
    made = [_trial(session, settings, store, sweep, asked + i, params)
            for i, params in enumerate(sampled)]
    won = cast("CursorResult[Any]", session.execute(
        update(Sweep).where(Sweep.id == sweep.id, Sweep.asked == asked, Sweep.status == RUNNING)
        .values(asked=asked + n))).rowcount
    if won != 1:
        raise _Raced(sweep.id)
    session.refresh(sweep)
    return made


def _trial(session: Session, settings: Settings, store: BlobStore, sweep: Sweep, number: int,
           sampled: dict[str, Any]) -> Job:
    spec = JobSpec(dataset_id=sweep.dataset_id, algorithm=sweep.algorithm,
                   params={**sweep.params, **sampled}, features=sweep.features,
                   target=sweep.target, name=f"{sweep.name or sweep.id} #{number}")
    job = jobs.prepare_child(session=session, project=sweep.project, spec=spec,
                             settings=settings, store=store, parent_id=sweep.id)
    session.add(SweepTrial(job_id=job.id, sweep_id=sweep.id, number=number, params=sampled,
                           steps={}))
    session.flush()
    return job


def advance(*, settings: Settings, store: BlobStore, sweep_id: str) -> list[str]:
    """Start the sweep's next trials while it has budget and free slots, or end it once its
    budget is spent and no trial is active; return the ids of the trials sent."""
    try:
        with session_scope(settings.resolved_database_url) as s:
            made = _advance(s, settings, store, sweep_id)
    except _Raced:
        return []
    except QuotaExceeded as exc:  # the project is full: the reaper's tick tries again later
        log.info("sweep.deferred", sweep_id=sweep_id, quota=exc.quota)
        return []
    except Problem as exc:  # e.g. the dataset was deleted: no trial can start any more
        _stop(settings, sweep_id, exc.detail)
        return []
    for job in made:
        jobs.enqueue(settings, job)
        log.info("sweep.trial_started", sweep_id=sweep_id, job_id=job.id)
    return [job.id for job in made]


def _advance(session: Session, settings: Settings, store: BlobStore, sweep_id: str) -> list[Job]:
    sweep = session.get(Sweep, sweep_id, with_for_update=True, populate_existing=True)
    if sweep is None or sweep.status != RUNNING:
        return []
    found = rows(session=session, sweep_id=sweep_id)
    active = sum(1 for t, _ in found if t.state is None)
    free = min(sweep.parallelism - active, sweep.trials - sweep.asked)
    if sweep.cancel_requested or sweep.error or free <= 0:
        if active == 0 and (sweep.cancel_requested or sweep.error or sweep.asked >= sweep.trials):
            finish(session=session, sweep=sweep, found=found)
        return []
    return _open(session, settings, store, sweep, found, free)


def _stop(settings: Settings, sweep_id: str, reason: str) -> None:
    """No more trials for this sweep (reason says why); it ends when its active ones have."""
    log.warning("sweep.stopped", sweep_id=sweep_id, reason=reason)
    with session_scope(settings.resolved_database_url) as s:
        sweep = s.get(Sweep, sweep_id, with_for_update=True)
        if sweep is None or sweep.status != RUNNING:
            return
        sweep.error = reason[:2000]
        found = rows(session=s, sweep_id=sweep_id)
        if all(t.state is not None for t, _ in found):
            finish(session=s, sweep=sweep, found=found)


def finish(*, session: Session, sweep: Sweep, found: list[tuple[SweepTrial, Job]]) -> None:
    """End the sweep: cancelled on request, else succeeded when a trial succeeded, else failed;
    with its best trial. The one place a sweep ends (what follows an end belongs here)."""
    best = best_of(sweep, found)
    if sweep.cancel_requested:
        sweep.status = CANCELLED
    else:
        sweep.status = SUCCEEDED if any(t.state == SUCCEEDED for t, _ in found) else FAILED
    sweep.best_job_id = best[1].id if best else None
    sweep.best_model_id = best[1].model_id if best else None
    sweep.best_value = best[0].value if best else None
    sweep.finished_at = utcnow()
    session.flush()
    webhooks.emit(session=session, project=sweep.project, event=f"sweep.{sweep.status}",
                  data={"sweep": {"id": sweep.id, "name": sweep.name, "status": sweep.status,
                                  "algorithm": sweep.algorithm, "metric": sweep.metric,
                                  "best_job_id": sweep.best_job_id,
                                  "best_model_id": sweep.best_model_id,
                                  "best_value": sweep.best_value,
                                  "finished_at": sweep.finished_at.isoformat()}})
    log.info("sweep.ended", sweep_id=sweep.id, status=sweep.status, best_job_id=sweep.best_job_id)


def best_of(sweep: Sweep, found: Iterable[tuple[SweepTrial, Job]]) -> tuple[SweepTrial, Job] | None:
    """The succeeded trial with the best value (the earliest of equals), or None."""
    best: tuple[SweepTrial, Job] | None = None
    for trial, job in found:
        if trial.state != SUCCEEDED or trial.value is None:
            continue
        if best is None or search.better(sweep.direction, trial.value, cast(float, best[0].value)):
            best = (trial, job)
    return best


def after_job(*, settings: Settings, store: BlobStore | None, job_id: str) -> None:
    """After a job's end committed: if it was a sweep's trial, advance its sweep. Never raises
    (the reaper's tick advances any sweep this misses)."""
    try:
        with session_scope(settings.resolved_database_url) as s:
            sweep_id = s.scalar(select(SweepTrial.sweep_id).where(SweepTrial.job_id == job_id))
        if sweep_id is not None:
            advance(settings=settings, store=store or open_store(settings), sweep_id=sweep_id)
    except Exception:
        log.warning("sweep.advance_failed", job_id=job_id, exc_info=True)


def tick(settings: Settings, store: BlobStore) -> None:
    """Advance every running sweep (the reaper's safety net)."""
    with session_scope(settings.resolved_database_url) as s:
        running = list(s.scalars(select(Sweep.id).where(Sweep.status == RUNNING)))
    for sweep_id in running:
        advance(settings=settings, store=store, sweep_id=sweep_id)


# --- cancel and read -------------------------------------------------------------------

def cancel(*, session: Session, project: str, sweep_id: str) -> Sweep:
    """Make no more trials, cancel the queued and running ones; the sweep ends cancelled when
    none is active (at once when none was). The caller commits."""
    sweep = get(session=session, project=project, sweep_id=sweep_id)
    if sweep.status != RUNNING:
        return sweep
    sweep.cancel_requested = True
    for _, job in rows(session=session, sweep_id=sweep.id):
        if job.status in ACTIVE:
            jobs.request_cancel(session=session, project=project, job_id=job.id)
    found = rows(session=session, sweep_id=sweep.id)
    if all(t.state is not None for t, _ in found):
        finish(session=session, sweep=sweep, found=found)
    return sweep


def get(*, session: Session, project: str, sweep_id: str) -> Sweep:
    """One sweep of the project, or NotFound."""
    return owned(session, Sweep, sweep_id, project=project, what="sweep")


def list_(*, session: Session, project: str, limit: int, offset: int,
          status: str | None = None) -> tuple[list[Sweep], int]:
    """A page of the project's sweeps, newest first, and the total count."""
    where = [Sweep.project == project] + ([Sweep.status == status] if status else [])
    return page(session, Sweep, where, limit=limit, offset=offset)


@dataclass(frozen=True)
class TrialView:
    """One row of a sweep's leaderboard."""

    job_id: str
    number: int
    params: dict[str, Any]
    state: str  # the job's status while active; then succeeded, pruned, failed or cancelled
    value: float | None
    seconds: float | None
    model_id: str | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class Board:
    """A sweep with its trials and its best so far."""

    sweep: Sweep
    trials: list[TrialView]
    best_job_id: str | None
    best_model_id: str | None
    best_value: float | None


def board(*, session: Session, sweep: Sweep) -> Board:
    """The sweep's leaderboard: every trial by number, and the best succeeded one so far."""
    found = rows(session=session, sweep_id=sweep.id)
    now = utcnow()
    views = [TrialView(job_id=j.id, number=t.number, params=t.params, state=t.state or j.status,
                       value=t.value, seconds=t.seconds if t.state else _running_for(j, now),
                       model_id=j.model_id, started_at=j.started_at, finished_at=j.finished_at)
             for t, j in found]
    best = best_of(sweep, found)
    return Board(sweep=sweep, trials=views, best_job_id=best[1].id if best else None,
                 best_model_id=best[1].model_id if best else None,
                 best_value=best[0].value if best else None)


def _running_for(job: Job, now: datetime) -> float | None:
    return round((now - job.started_at).total_seconds(), 3) if job.started_at else None
