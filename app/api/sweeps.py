"""/v1/sweeps: start a hyperparameter sweep (its trials are jobs), list, show, follow, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from app.api import events
from app.api.deps import Limit, Offset, ProjectDep, SessionDep, SettingsDep, StoreDep
from app.schemas import Page, SweepCreate, SweepList, SweepOut
from app.services import sweeps
from app.services.sweeps import SweepSpec

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such sweep"}}
Status = Annotated[str | None, Query(pattern="^(running|succeeded|failed|cancelled)$")]


@router.post("", status_code=202, response_model=SweepOut, responses={
    410: {"description": "the dataset's files are missing from the blob store"},
    422: {"description": "unknown algorithm or dataset; a space entry that is not a param of "
                         "the algorithm or whose values it refuses; a metric it does not report "
                         "(the message lists those it does); trials past the maximum"},
    429: {"description": "the project is at its queued_jobs or models quota"}})
def create_sweep(body: SweepCreate, session: SessionDep, settings: SettingsDep, store: StoreDep,
                 project: ProjectDep) -> SweepOut:
    """Start a hyperparameter sweep: Optuna samples params from the space, each trial is a job
    that any worker runs (`parallelism` at once), lagging torch trials are pruned, and the
    leaderboard names the best job and model."""
    spec = SweepSpec(dataset_id=body.dataset_id, algorithm=body.algorithm, space=body.space,
                     metric=body.metric, direction=body.direction, trials=body.trials,
                     parallelism=body.parallelism, params=body.params, sampler=body.sampler,
                     seed=body.seed, pruner=body.pruner.model_dump() if body.pruner else None,
                     features=body.features, target=body.target, name=body.name)
    sweep = sweeps.create(session=session, project=project, spec=spec, settings=settings,
                          store=store)
    return SweepOut.from_board(sweeps.board(session=session, sweep=sweep))


@router.get("", response_model=SweepList)
def list_sweeps(session: SessionDep, project: ProjectDep, limit: Limit = 50, offset: Offset = 0,
                status: Status = None) -> SweepList:
    """The project's sweeps, newest first; filter with ?status=."""
    rows, total = sweeps.list_(session=session, project=project, limit=limit, offset=offset,
                               status=status)
    return SweepList(items=[SweepOut.from_board(sweeps.board(session=session, sweep=r))
                            for r in rows],
                     total=total, next=Page.next_offset(offset, len(rows), total))


@router.get("/{sweep_id}", response_model=SweepOut, responses=NOT_FOUND)
def get_sweep(sweep_id: str, session: SessionDep, project: ProjectDep) -> SweepOut:
    """One sweep: status, progress and the leaderboard of its trials, with the best so far."""
    sweep = sweeps.get(session=session, project=project, sweep_id=sweep_id)
    return SweepOut.from_board(sweeps.board(session=session, sweep=sweep))


@router.get("/{sweep_id}/events", response_class=StreamingResponse, responses={
    **NOT_FOUND, 200: {"description": "text/event-stream of `status`, `trial` (a trial started, "
                       "ended or got its value), `progress` and a final `end` event carrying "
                       "the whole sweep",
                       "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
def sweep_events(sweep_id: str, request: Request, session: SessionDep, settings: SettingsDep,
                 project: ProjectDep) -> StreamingResponse:
    """Follow a sweep as server-sent events; the stream ends when the sweep does."""
    sweeps.get(session=session, project=project, sweep_id=sweep_id)  # 404 before the stream
    body = events.sweep_stream(request, settings.resolved_database_url, project, sweep_id)
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/{sweep_id}/cancel", status_code=202, response_model=SweepOut,
             responses=NOT_FOUND)
def cancel_sweep(sweep_id: str, session: SessionDep, project: ProjectDep) -> SweepOut:
    """Cancel a sweep: no new trials; queued trials end at once, running ones between steps."""
    sweep = sweeps.cancel(session=session, project=project, sweep_id=sweep_id)
    session.commit()
    return SweepOut.from_board(sweeps.board(session=session, sweep=sweep))
