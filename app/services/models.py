"""Trained models: rows in the database, artifacts in the blob store."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.db.tables import Model
from app.errors import NotFound
from app.services import page


def artifact_key(model_id: str) -> str:
    """Where a model's artifact folder lives in the blob store."""
    return f"models/{model_id}"


def get(*, session: Session, project: str, model_id: str) -> Model:
    """One model of the project, or NotFound."""
    row = session.get(Model, model_id)
    if row is None or row.project != project:
        raise NotFound(f"model {model_id} does not exist")
    return row


def list_(*, session: Session, project: str, limit: int, offset: int) -> tuple[list[Model], int]:
    """A page of the project's models, newest first, and the total count."""
    return page(session, Model, [Model.project == project], limit=limit, offset=offset)


def delete(*, session: Session, project: str, model_id: str) -> str:
    """Delete a model's row; return its artifact key to remove after commit."""
    row = get(session=session, project=project, model_id=model_id)
    session.delete(row)
    session.flush()
    return row.artifact_key
