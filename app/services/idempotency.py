"""Idempotency-Key: a retried create call returns what the first one created."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.db.tables import IdempotencyKey
from app.errors import Invalid

MAX_KEY = 255


def check_key(key: str) -> str:
    """The key as sent, or a 422 when it is empty or too long."""
    key = key.strip()
    if not key or len(key) > MAX_KEY:
        raise Invalid(f"Idempotency-Key must be 1 to {MAX_KEY} characters",
                      errors=[{"field": "Idempotency-Key", "message": "empty or too long"}])
    return key


def find(*, session: Session, project: str, route: str, key: str, fingerprint: str | None) -> str | None:
    """The id created under this key before, if any; 422 if the key came with another request."""
    row = session.get(IdempotencyKey, (project, route, key))
    if row is None:
        return None
    if fingerprint is not None and row.fingerprint != fingerprint:
        raise Invalid("this Idempotency-Key was used with a different request; use a new key "
                      "for a new request", errors=[{"field": "Idempotency-Key", "message": "reused"}])
    return row.resource_id


def remember(*, session: Session, project: str, route: str, key: str, fingerprint: str,
             resource_id: str) -> None:
    """Record the key in the same transaction as the resource it created."""
    session.add(IdempotencyKey(project=project, route=route, key=key, fingerprint=fingerprint,
                               resource_id=resource_id))
    session.flush()
