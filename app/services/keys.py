"""API keys: a key belongs to a project; only its sha256 and a short prefix are stored."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.tables import ApiKey, new_id, utcnow
from app.errors import NotFound, field_error

KEY_PREFIX = "pt_"
# "pt_" + 8 characters: enough to tell keys apart in a list, of no use to an attacker.
PREFIX_CHARS = 11
PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class Caller:
    """Who a request is: the project it acts for and the key it used (None when open)."""

    project: str
    key_id: str | None


def digest(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def check_project(project: str) -> str:
    """A project name as given, or a 422: letters, digits, `_ . -`, at most 100."""
    if not PROJECT.match(project):
        raise field_error("project", "invalid name", detail=f"project {project!r} must be 1-100 "
                          "letters, digits, '_', '.' or '-'")
    return project


def create(*, session: Session, project: str, name: str | None = None,
           key: str | None = None) -> tuple[ApiKey, str]:
    """A new key for project; returns the row and the key itself, which is never stored."""
    key = key or KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(id=new_id("key"), project=check_project(project), prefix=key[:PREFIX_CHARS],
                 key_hash=digest(key), name=name)
    session.add(row)
    session.flush()
    return row, key


def seed(*, session: Session, pairs: list[tuple[str, str]]) -> int:
    """Store PRETRAINER_API_KEYS keys not stored yet (a revoked one stays revoked); how many new."""
    added = 0
    for project, key in pairs:
        if session.scalar(select(ApiKey.id).where(ApiKey.key_hash == digest(key))):
            continue
        try:
            with session.begin_nested():  # another API process may seed the same key now
                create(session=session, project=project, name="PRETRAINER_API_KEYS", key=key)
            added += 1
        except IntegrityError:
            pass
    return added


def resolve(*, session: Session, key: str) -> Caller | None:
    """The caller a presented key stands for, or None (unknown or revoked)."""
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == digest(key))).first()
    if row is None or row.revoked_at is not None:
        return None
    return Caller(project=row.project, key_id=row.id)


def any_active(*, session: Session) -> bool:
    """Whether at least one key is not revoked (then the API is closed to callers without one)."""
    return bool(session.scalar(select(func.count()).select_from(ApiKey)
                               .where(ApiKey.revoked_at.is_(None))))


def list_(*, session: Session, project: str | None = None) -> list[ApiKey]:
    """Keys, of one project or all, oldest first."""
    where = [ApiKey.project == project] if project else []
    query = select(ApiKey).where(*where).order_by(ApiKey.created_at, ApiKey.id)
    return list(session.scalars(query))


def revoke(*, session: Session, key_id: str, project: str | None = None) -> ApiKey:
    """Revoke a key by id or prefix (of the project, when given); refused once an API stops believing it
    (PRETRAINER_KEY_CACHE_SECONDS)."""
    where: list[ColumnElement[bool]] = [(ApiKey.id == key_id) | (ApiKey.prefix == key_id)]
    if project:
        where.append(ApiKey.project == project)
    rows = list(session.scalars(select(ApiKey).where(*where)))
    if len(rows) != 1:
        raise NotFound(f"key {key_id} does not exist" if not rows else
                       f"{len(rows)} keys match {key_id}; give the key id")
    session.execute(update(ApiKey).where(ApiKey.id == rows[0].id, ApiKey.revoked_at.is_(None))
                    .values(revoked_at=utcnow()))
    session.flush()
    session.refresh(rows[0])
    return rows[0]
