"""Request bounds: a serving rate per API key, serving calls in flight per project, and the
size of a request body."""

from __future__ import annotations

import math
import threading
import time

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import render
from app.config import Settings
from app.db.session import session_scope
from app.errors import field_error
from app.services import quotas


class RateLimiter:
    """A token bucket per API key: `rate` calls per second on average, `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str) -> None:
        """Spend one token of who's bucket, or raise a 429 saying when to retry."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(who, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens < 1:
                self._buckets[who] = (tokens, now)
                wait = math.ceil((1 - tokens) / self.rate)
                raise field_error("Authorization", "rate limited", status=429,
                                  detail=f"more than {self.rate:g} serving calls per second for "
                                  f"this API key (PRETRAINER_PREDICT_RATE, bursts of "
                                  f"PRETRAINER_PREDICT_BURST={self.burst}); retry in {wait} s",
                                  headers={"Retry-After": str(wait)})
            self._buckets[who] = (tokens - 1, now)


class ServingSlots:
    """predict, embed and generate calls in flight per project in this process, bounded by
    each project's serving_requests quota (read again every PRETRAINER_QUOTA_RECHECK_SECONDS).

    Only the event loop enters and leaves, so plain dict updates need no lock.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.in_flight: dict[str, int] = {}
        self._limits: dict[str, tuple[int, float]] = {}  # project -> (limit, believed until)

    def _read_limit(self, project: str) -> int:
        with session_scope(self.settings.resolved_database_url) as s:
            return quotas.limits(session=s, project=project,
                                 defaults=self.settings.quota_defaults)["serving_requests"]

    async def enter(self, project: str) -> None:
        """Take a slot of the project, or raise a 429 naming the quota."""
        limit, until = self._limits.get(project, (0, 0.0))
        if until <= time.monotonic():
            limit = await run_in_threadpool(self._read_limit, project)
            self._limits[project] = (limit, time.monotonic() + self.settings.quota_recheck_seconds)
        used = self.in_flight.get(project, 0)
        if used >= limit:
            raise quotas.exceeded("serving_requests", limit=limit, used=used)
        self.in_flight[project] = used + 1

    def leave(self, project: str) -> None:
        """Give back a slot taken by enter."""
        left = self.in_flight.get(project, 1) - 1
        if left > 0:
            self.in_flight[project] = left
        else:
            self.in_flight.pop(project, None)


class _BodyTooLarge(HTTPException):
    # An HTTPException, so that FastAPI's body reading lets it through to the problem handler.
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes "
                              "(PRETRAINER_MAX_BODY_BYTES)")


class BodyLimit:
    """ASGI middleware: a request body past max_body_bytes is a 413 (uploads have their own bound).

    The declared Content-Length is checked first; a chunked body is counted as it arrives.
    """

    def __init__(self, app: ASGIApp, *, limit: int, exempt: tuple[tuple[str, str], ...],
                 exempt_prefixes: tuple[tuple[str, str], ...] = ()) -> None:
        self.app, self.limit, self.exempt = app, limit, exempt
        self.exempt_prefixes = exempt_prefixes

    def _exempt(self, method: str, path: str) -> bool:
        return (method, path.rstrip("/")) in self.exempt or any(
            method == m and path.startswith(p) for m, p in self.exempt_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            too_large = field_error("body", "too large", status=413,
                                    detail=_BodyTooLarge(self.limit).detail)
            await render(too_large)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)
