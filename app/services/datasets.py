"""Datasets: rows in the database, bytes in the blob store."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import storage
from app.db.tables import ACTIVE, Dataset, Job
from app.errors import Conflict, NotFound
from app.services import page


def create(*, session: Session, project: str, dataset_id: str, fields: dict[str, Any]) -> Dataset:
    """Insert a dataset row whose bytes are already published."""
    row = Dataset(id=dataset_id, project=project, **fields)
    session.add(row)
    session.flush()
    return row


def get(*, session: Session, project: str, dataset_id: str) -> Dataset:
    """One dataset of the project, or NotFound."""
    row = session.get(Dataset, dataset_id)
    if row is None or row.project != project:
        raise NotFound(f"dataset {dataset_id} does not exist")
    return row


def list_(*, session: Session, project: str, limit: int, offset: int) -> tuple[list[Dataset], int]:
    """A page of the project's datasets, newest first, and the total count."""
    return page(session, Dataset, [Dataset.project == project], limit=limit, offset=offset)


def delete(*, session: Session, project: str, dataset_id: str) -> str:
    """Delete a dataset's row unless an active job needs it; return the blob prefix to remove after commit."""
    row = get(session=session, project=project, dataset_id=dataset_id)
    busy = session.scalars(
        select(Job.id).where(Job.dataset_id == dataset_id, Job.status.in_(ACTIVE))
    ).all()
    if busy:
        raise Conflict(f"dataset {dataset_id} is used by active jobs: {', '.join(busy)}; "
                       "cancel them or wait for them to finish")
    session.delete(row)
    session.flush()
    return storage.dataset_prefix(dataset_id)
