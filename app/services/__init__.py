"""Service functions: the one place per resource where SQL lives."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import NotFound

T = TypeVar("T")


class _Owned(Protocol):
    @property
    def project(self) -> str: ...


R = TypeVar("R", bound=_Owned)


def owned(session: Session, table: type[R], row_id: str, *, project: str, what: str) -> R:
    """The row of table with this id if it belongs to the project, else NotFound (another
    project's id is not found either)."""
    row = session.get(table, row_id)
    if row is None or row.project != project:
        raise NotFound(f"{what} {row_id} does not exist")
    return row


def page(session: Session, table: type[T], where: list[Any], *, limit: int,
         offset: int) -> tuple[list[T], int]:
    """Rows of table matching where, newest first, and how many match in all."""
    total = session.scalar(select(func.count()).select_from(table).where(*where)) or 0
    rows = session.scalars(
        select(table).where(*where)
        .order_by(table.created_at.desc(), table.id)  # type: ignore[attr-defined]
        .limit(limit).offset(offset)
    ).all()
    return list(rows), total
