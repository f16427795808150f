"""/v1/backbones: what a transfer job can start from now."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ProjectDep, SessionDep, SettingsDep
from app.schemas import BackboneList
from app.services import backbones

router = APIRouter(prefix="/v1/backbones", tags=["backbones"])


@router.get("", response_model=BackboneList)
def list_backbones(session: SessionDep, settings: SettingsDep, project: ProjectDep) -> BackboneList:
    """Named architectures (with whether their weights are present) and the project's models
    that can serve as a backbone (`params.backbone = "model:<id>"`)."""
    return BackboneList.model_validate(backbones.catalogue(
        session=session, project=project, weights_dir=settings.resolved_weights_dir))
