"""/v1/comparisons: does pretraining pay? Start, list, show (rows and deltas), cancel."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from app.api.deps import Limit, Offset, ProjectDep, SessionDep, SettingsDep, StoreDep
from app.db.tables import Comparison, Job
from app.schemas import (
    ComparisonCreate,
    ComparisonDeltaOut,
    ComparisonList,
    ComparisonOut,
    ComparisonRowOut,
    Page,
)
from app.services import comparisons
from app.services.comparison_results import Result
from app.services.comparisons import ComparisonSpec

router = APIRouter(prefix="/v1/comparisons", tags=["comparisons"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such comparison"}}


def _out(row: Comparison, result: Result, jobs: list[Job]) -> ComparisonOut:
    return ComparisonOut(
        id=row.id, name=row.name, dataset_id=row.dataset_id, backbones=row.backbones,
        seeds=row.seeds, params=row.params, metric=row.metric, status=result.status,
        counts=result.counts, rows=[ComparisonRowOut(**asdict(r)) for r in result.rows],
        deltas=[ComparisonDeltaOut(**asdict(d)) for d in result.deltas],
        job_ids=[j.id for j in jobs], created_at=row.created_at)


def _show(session: SessionDep, row: Comparison) -> ComparisonOut:
    result, jobs = comparisons.result(session=session, comparison=row)
    return _out(row, result, jobs)


@router.post("", status_code=202, response_model=ComparisonOut, responses={
    410: {"description": "the dataset's (or a backbone model's) files are missing"},
    422: {"description": "a bad backbone (backbones[i]), seeds, params or metric"},
    429: {"description": "all of its jobs do not fit the project's queued_jobs (or models) "
                         "quota; nothing was started"}})
def create_comparison(body: ComparisonCreate, session: SessionDep, settings: SettingsDep,
                      store: StoreDep, project: ProjectDep) -> ComparisonOut:
    """Does pretraining pay? Train `transfer` from each backbone, pretrained and from scratch,
    once per seed; every job is queued at once (or none is)."""
    spec = ComparisonSpec(dataset_id=body.dataset_id, backbones=body.backbones, seeds=body.seeds,
                          params=body.params, features=body.features, target=body.target,
                          metric=body.metric, name=body.name)
    row, _ = comparisons.create(session=session, project=project, spec=spec, settings=settings,
                                store=store)
    return _show(session, row)


@router.get("", response_model=ComparisonList)
def list_comparisons(session: SessionDep, project: ProjectDep, limit: Limit = 50,
                     offset: Offset = 0) -> ComparisonList:
    """The project's comparisons, newest first, each with its results so far."""
    rows, total = comparisons.list_(session=session, project=project, limit=limit, offset=offset)
    return ComparisonList(items=[_show(session, r) for r in rows], total=total,
                          next=Page.next_offset(offset, len(rows), total))


@router.get("/{comparison_id}", response_model=ComparisonOut, responses=NOT_FOUND)
def get_comparison(comparison_id: str, session: SessionDep, project: ProjectDep) -> ComparisonOut:
    """One comparison: the held-out metric per (backbone, pretrained) and seed with mean and
    std, and per backbone the paired difference to scratch with its 95% interval."""
    row = comparisons.get(session=session, project=project, comparison_id=comparison_id)
    return _show(session, row)


@router.post("/{comparison_id}/cancel", status_code=202, response_model=ComparisonOut,
             responses=NOT_FOUND)
def cancel_comparison(comparison_id: str, session: SessionDep,
                      project: ProjectDep) -> ComparisonOut:
    """Cancel every job of the comparison that has not ended."""
    row = comparisons.cancel(session=session, project=project, comparison_id=comparison_id)
    session.commit()
    return _show(session, row)
