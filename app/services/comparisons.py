"""Comparisons ("does pretraining pay?"): submit the transfer jobs of every (backbone,
pretrained, seed) at once, or none; read, list and cancel them.

Results are derived from the child jobs by app.services.comparison_results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from app.config import Settings
from app.db.tables import ACTIVE, Comparison, Job, new_id, utcnow
from app.errors import Invalid, Problem, field_error
from app.ml.deep.params import SEED_MAX
from app.ml.transfer.params import AUTO_VALIDATION_FRACTION
from app.services import comparison_results, jobs, owned, page, quotas
from app.services.comparison_results import Result
from app.services.job_checks import JobSpec
from app.storage import BlobStore

ALGORITHM = "transfer"
MAX_BACKBONES = 8
MAX_SEEDS = 20
# Params the comparison sets on each child: a value given in params would be overwritten.
PER_CHILD = ("backbone", "pretrained", "seed")
# Held-out metrics a comparison can compare, by the head that reports them.
METRICS = {"classification": ("accuracy", "macro_f1"), "regression": ("r2", "rmse", "mae")}


@dataclass(frozen=True)
class ComparisonSpec:
    """What a client asks for in POST /v1/comparisons."""

    dataset_id: str
    backbones: list[str]
    seeds: int | list[int]
    params: dict[str, Any]
    features: list[str] | None = None
    target: str | None = None
    metric: str | None = None
    name: str | None = None


def create(*, session: Session, project: str, spec: ComparisonSpec, settings: Settings,
           store: BlobStore) -> tuple[Comparison, list[Job]]:
    """Check everything, insert the comparison and all its jobs, commit, then queue the jobs.

    A bad backbone is a 422 naming backbones[i]; a comparison past the queued_jobs (or models)
    quota is refused whole (429): nothing is left half-made.
    """
    seeds = seed_list(spec.seeds)
    _check_backbones(spec.backbones)
    params = _shared_params(spec.params)
    comparison = Comparison(
        id=new_id(comparison_results.ID_PREFIX), project=project, name=spec.name, dataset_id=spec.dataset_id,
        backbones=list(spec.backbones), seeds=seeds, params=params, features=spec.features,
        target=spec.target, metric=_metric(spec.metric, params), cancel_requested=False,
        created_at=utcnow())
    session.add(comparison)
    n = 2 * len(spec.backbones) * len(seeds)
    quotas.check(session=session, project=project, defaults=settings.quota_defaults,
                 adding={"queued_jobs": n, "models": n})
    made = [_child(session, project, comparison, settings, store, i, pretrained, seed)
            for i in range(len(spec.backbones)) for pretrained in (True, False)
            for seed in seeds]
    session.commit()
    for job in made:  # committed: every row exists before a worker sees its message
        jobs.enqueue(settings, job)
    return comparison, made


def seed_list(seeds: int | list[int]) -> list[int]:
    """The seeds asked for: a count n is seeds 0..n-1; a list is taken as it is (distinct)."""
    if isinstance(seeds, int):
        if not 1 <= seeds <= MAX_SEEDS:
            raise field_error("seeds", f"a count of seeds is 1 to {MAX_SEEDS}, not {seeds}")
        return list(range(seeds))
    if not 1 <= len(seeds) <= MAX_SEEDS:
        raise field_error("seeds", f"give 1 to {MAX_SEEDS} seeds, not {len(seeds)}")
    for i, seed in enumerate(seeds):
        if not 0 <= seed <= SEED_MAX:
            raise field_error(f"seeds[{i}]", f"a seed is 0 to {SEED_MAX}")
        if seed in seeds[:i]:
            raise field_error(f"seeds[{i}]", f"seed {seed} is listed twice")
    return list(seeds)


def _check_backbones(backbones: list[str]) -> None:
    if not 1 <= len(backbones) <= MAX_BACKBONES:
        raise field_error("backbones", f"give 1 to {MAX_BACKBONES} backbones, not {len(backbones)}")
    for i, backbone in enumerate(backbones):
        if backbone in backbones[:i]:
            raise field_error(f"backbones[{i}]", f"{backbone} is listed twice")


def _shared_params(given: dict[str, Any]) -> dict[str, Any]:
    for name in PER_CHILD:
        if name in given:
            raise field_error(f"params.{name}", "set by the comparison for each job "
                              "(backbones, and seeds; pretrained is both true and false)")
    if given.get("validation_fraction") == 0:
        raise field_error("params.validation_fraction", "a comparison scores held-out rows; "
                          "leave it out or give a share above 0")
    # The transfer default holds no rows out of a small labelled set; a comparison needs some.
    return {"validation_fraction": AUTO_VALIDATION_FRACTION, **given}


def _metric(metric: str | None, params: dict[str, Any]) -> str:
    head = params.get("head", "classification")
    valid = METRICS.get(head, METRICS["classification"])
    if metric is None:
        return valid[0]
    if metric not in valid:
        raise field_error("metric", f"a {head} head reports {', '.join(valid)}, not {metric!r}")
    return metric


def _child(session: Session, project: str, comparison: Comparison, settings: Settings,
           store: BlobStore, i: int, pretrained: bool, seed: int) -> Job:
    backbone = comparison.backbones[i]
    params = {**comparison.params, "backbone": backbone, "pretrained": pretrained, "seed": seed}
    name = f"{comparison.name or comparison.id}: {backbone} {'pretrained' if pretrained else 'scratch'} seed {seed}"
    spec = JobSpec(dataset_id=comparison.dataset_id, algorithm=ALGORITHM, params=params,
                   features=comparison.features, target=comparison.target, name=name[:255])
    try:
        return jobs.prepare_child(session=session, project=project, spec=spec, settings=settings,
                                  store=store, parent_id=comparison.id, quota=False)
    except Problem as exc:
        raise _about_backbone(exc, i, backbone) from exc


def _about_backbone(exc: Problem, i: int, backbone: str) -> Problem:
    """A child's problem with params.backbone renamed to the request's backbones[i]."""
    if not isinstance(exc, Invalid) or not exc.errors:
        return exc
    errors = [{**e, "field": f"backbones[{i}]"} if e.get("field") == "params.backbone" else e
              for e in exc.errors]
    if errors == exc.errors:
        return exc
    return Invalid(f"backbones[{i}] ({backbone}): {exc.detail}", errors=errors)


def get(*, session: Session, project: str, comparison_id: str) -> Comparison:
    """One comparison of the project, or NotFound."""
    return owned(session, Comparison, comparison_id, project=project, what="comparison")


def result(*, session: Session, comparison: Comparison) -> tuple[Result, list[Job]]:
    """What the comparison's jobs say now, and the jobs."""
    kids = comparison_results.children(session=session, comparison_id=comparison.id)
    return comparison_results.derive(comparison, kids), kids


def list_(*, session: Session, project: str, limit: int,
          offset: int) -> tuple[list[Comparison], int]:
    """A page of the project's comparisons, newest first, and the total count."""
    return page(session, Comparison, [Comparison.project == project], limit=limit, offset=offset)


def cancel(*, session: Session, project: str, comparison_id: str) -> Comparison:
    """Cancel every job of the comparison that has not ended (queued at once, running between
    steps); the caller commits."""
    comparison = get(session=session, project=project, comparison_id=comparison_id)
    comparison.cancel_requested = True
    for job in comparison_results.children(session=session, comparison_id=comparison.id):
        if job.status in ACTIVE:
            jobs.request_cancel(session=session, project=project, job_id=job.id)
    session.flush()
    return comparison
