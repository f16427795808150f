"""Service functions: the one place per resource where SQL lives."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

T = TypeVar("T")


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
