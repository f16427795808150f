"""Trained models: rows in the database, artifacts in the blob store."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.tables import ACTIVE, Job, Model
from app.errors import Conflict, NotFound
from app.ml.transfer.backbones import MODEL_PREFIX
from app.services import page


def get(*, session: Session, project: str, model_id: str) -> Model:
    """One model of the project, or NotFound."""
    row = session.get(Model, model_id)
    if row is None or row.project != project:
        raise NotFound(f"model {model_id} does not exist")
    return row


def list_(*, session: Session, project: str, limit: int, offset: int) -> tuple[list[Model], int]:
    """A page of the project's models, newest first, and the total count."""
    return page(session, Model, [Model.project == project], limit=limit, offset=offset)


def dependants(*, session: Session, project: str, model_id: str) -> list[str]:
    """Models fine-tuned from this one, and active jobs that will load it as their backbone."""
    models = session.scalars(select(Model.id).where(Model.project == project,
                                                    Model.backbone_model_id == model_id)).all()
    active = session.scalars(select(Job).where(Job.project == project,
                                               Job.status.in_(ACTIVE),
                                               Job.algorithm == "transfer")).all()
    spec = MODEL_PREFIX + model_id
    jobs = [j.id for j in active if (j.params or {}).get("backbone") == spec]
    return sorted(models) + jobs


def delete(*, session: Session, project: str, model_id: str) -> str:
    """Delete a model's row unless other models or active jobs are built on it; return its
    artifact key to remove after commit."""
    row = get(session=session, project=project, model_id=model_id)
    using = dependants(session=session, project=project, model_id=model_id)
    if using:
        raise Conflict(f"model {model_id} is the backbone of {', '.join(using)}; delete those "
                       "first (or wait for the jobs to finish)",
                       errors=[{"field": "model_id", "message": "used as a backbone by "
                                + ", ".join(using)}])
    session.delete(row)
    session.flush()
    return row.artifact_key
