"""Who may call: Bearer API keys of projects, and the loopback-only open mode."""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.db.session import session_scope
from app.errors import Unauthorized
from app.services import keys
from app.services.keys import Caller

DEFAULT_PROJECT = "default"
OPEN_CALLER = Caller(DEFAULT_PROJECT, None)  # every caller of an open (keyless) API
# How long "no key exists, the API is open" is believed before the database is asked again.
OPEN_RECHECK_SECONDS = 2.0


# At most this many keys are believed at once; past it the oldest beliefs are dropped.
KNOWN_KEYS = 10_000


class Access:
    """Resolves a request's Authorization header to a Caller, or refuses it with a 401.

    A key found in the database is believed for `key_cache_seconds` (1 s by default): looking
    it up on every request is a thread hop and a query, which under load is most of a small
    predict's latency. Revoking a key therefore takes effect within that time.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._open_until = 0.0
        self._open = False
        self._known: dict[str, tuple[Caller, float]] = {}  # key's digest -> (caller, until)

    def seed(self) -> None:
        """Store PRETRAINER_API_KEYS (hashed) so they resolve, list and revoke like the others."""
        pairs = self.settings.seeded_keys
        if pairs:
            with session_scope(self.settings.resolved_database_url) as s:
                keys.seed(session=s, pairs=pairs)

    def _is_open(self) -> bool:
        # Never open off loopback, nor when keys are configured; else as long as no key exists.
        if not self.settings.loopback or self.settings.seeded_keys:
            return False
        if time.monotonic() >= self._open_until:
            with session_scope(self.settings.resolved_database_url) as s:
                self._open = not keys.any_active(session=s)
            self._open_until = time.monotonic() + OPEN_RECHECK_SECONDS
        return self._open

    def _lookup(self, key: str) -> Caller | None:
        with session_scope(self.settings.resolved_database_url) as s:
            return keys.resolve(session=s, key=key)

    async def caller(self, authorization: str | None) -> Caller:
        """The caller of a request with this Authorization header (None: no header)."""
        if not authorization:
            if self._open_until > time.monotonic() and self._open:  # the hot path: no thread hop
                return OPEN_CALLER
            if await run_in_threadpool(self._is_open):
                return OPEN_CALLER
            raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("the Authorization header must be `Bearer <key>`")
        return await self._believed(key.strip())

    async def _believed(self, key: str) -> Caller:
        digest = keys.digest(key)
        now = time.monotonic()
        known = self._known.get(digest)
        if known is not None and known[1] > now:  # the hot path: no thread hop, no query
            return known[0]
        found = await run_in_threadpool(self._lookup, key)
        self._known.pop(digest, None)
        if found is None:
            raise Unauthorized("unknown or revoked API key")
        if self.settings.key_cache_seconds > 0:
            if len(self._known) >= KNOWN_KEYS:  # dicts keep insertion order: drop the oldest
                del self._known[next(iter(self._known))]
            self._known[digest] = (found, now + self.settings.key_cache_seconds)
        return found
