"""This database's identity: made once by the migration, and what the blob store's owner names."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.tables import DatabaseIdentity, new_id


def database_id(*, session: Session) -> str:
    """The database's identity; made here for a database whose schema came from elsewhere.

    The caller commits (a made id must be committed before it is written anywhere else).
    """
    found = session.scalars(select(DatabaseIdentity.id).order_by(DatabaseIdentity.created_at)
                            .limit(1)).first()
    if found is not None:
        return found
    row = DatabaseIdentity(id=new_id("db"))
    session.add(row)
    session.flush()
    return row.id
