"""/v1/projects/me: the caller's project, its quotas and what it uses of each."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.deps import CallerDep, SessionDep, SettingsDep
from app.schemas import ProjectOut, QuotaOut
from app.services import quotas

router = APIRouter(prefix="/v1/projects", tags=["projects"])


@router.get("/me", response_model=ProjectOut)
def me(request: Request, session: SessionDep, settings: SettingsDep,
       caller: CallerDep) -> ProjectOut:
    """The project of the request's API key: each quota's limit and current use."""
    in_flight = request.app.state.slots.in_flight.get(caller.project, 0)
    rows = quotas.describe(session=session, project=caller.project,
                           defaults=settings.quota_defaults, in_flight=in_flight)
    return ProjectOut(project=caller.project, key_id=caller.key_id, quotas={
        q.name: QuotaOut(limit=q.limit, used=q.used, source="project" if q.own else "settings",
                         description=quotas.MEANING[q.name]) for q in rows})
