"""Idempotency-Key: a retried create call returns what the first one created.

`once` owns the whole of it for a create call: find what the key named, else create, remember
the key in the same transaction, commit, and settle a race between two calls with one key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.tables import IdempotencyKey
from app.errors import field_error

MAX_KEY = 255


def check_key(key: str | None) -> str | None:
    """The key as sent (None without one), or a 422 when it is empty or too long."""
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY:
        raise field_error(
            "Idempotency-Key", "empty or too long",
            detail=f"Idempotency-Key must be 1 to {MAX_KEY} characters")
    return key


def find(*, session: Session, project: str, route: str, key: str, fingerprint: str | None) -> str | None:
    """The id created under this key before, if any; 422 if the key came with another request."""
    row = session.get(IdempotencyKey, (project, route, key))
    if row is None:
        return None
    if fingerprint is not None and row.fingerprint != fingerprint:
        raise field_error(
            "Idempotency-Key", "reused",
            detail="this Idempotency-Key was used with a different request; use a new key "
                   "for a new request")
    return row.resource_id


def remember(*, session: Session, project: str, route: str, key: str, fingerprint: str,
             resource_id: str) -> None:
    """Record the key in the same transaction as the resource it created."""
    session.add(IdempotencyKey(project=project, route=route, key=key, fingerprint=fingerprint,
                               resource_id=resource_id))
    session.flush()


class Resource(Protocol):
    """What a create call makes: a row with an id the key can name."""

    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=Resource)


@dataclass(frozen=True)
class Once(Generic[R]):
    """A create call's result: the resource, and whether this call made it (false for a retry,
    or for the loser of a race on the key)."""

    resource: R
    created: bool


@dataclass(frozen=True)
class Claim(Generic[R]):
    """One create call under an optional Idempotency-Key, and how to find what a key names.

    fingerprint: what the request was, checked against a retry and recorded; or, where that is
    known only once the resource exists (an upload's sha256), a function of the resource whose
    answer is recorded, a retry then matched by its key alone. discard removes what a created
    resource left outside the transaction (an upload's blobs) when its row is not kept.
    """

    session: Session
    project: str
    route: str
    key: str | None
    fingerprint: str | Callable[[R], str]
    load: Callable[[str], R]
    discard: Callable[[R], None] | None = None

    def replay(self) -> R | None:
        """What an earlier call under the key created, or None (no key, or not used yet)."""
        first = self._first()
        return self.load(first) if first is not None else None

    def settle(self, created: R) -> Once[R]:
        """Remember the key with the created resource and commit; the loser of a race on the key
        is rolled back (and discarded) and answers with what the winner created."""
        try:
            if self.key is not None:
                remember(session=self.session, project=self.project, route=self.route,
                         key=self.key, fingerprint=self._recorded(created),
                         resource_id=created.id)
            self.session.commit()
        except IntegrityError:  # the same key raced in from another request: it won
            self.session.rollback()
            self._discard(created)
            return Once(self.load(self._first() or ""), created=False)
        except BaseException:
            self._discard(created)
            raise
        return Once(created, created=True)

    def _first(self) -> str | None:
        if self.key is None:
            return None
        checked = self.fingerprint if isinstance(self.fingerprint, str) else None
        return find(session=self.session, project=self.project, route=self.route, key=self.key,
                    fingerprint=checked)

    def _recorded(self, created: R) -> str:
        return self.fingerprint if isinstance(self.fingerprint, str) else self.fingerprint(created)

    def _discard(self, created: R) -> None:
        if self.discard is not None:
            self.discard(created)


def once(claim: Claim[R], create: Callable[[], R]) -> Once[R]:
    """Create (and commit) a resource once per Idempotency-Key: a retry gets the first one."""
    first = claim.replay()
    if first is not None:
        return Once(first, created=False)
    return claim.settle(create())


async def once_async(claim: Claim[R], create: Callable[[], Awaitable[R]]) -> Once[R]:
    """once() for a create call that awaits (an upload reads its body as it creates)."""
    first = claim.replay()
    if first is not None:
        return Once(first, created=False)
    return claim.settle(await create())
