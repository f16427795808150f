"""Request bounds: a serving rate per API key, serving calls in flight per project, the
size of a request body, and the rate at which refused bodies are read."""

from __future__ import annotations

import asyncio
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


class RefusedBodyDrain:
    """ASGI middleware: the unread rest of a refused request's body is read at a bounded rate.

    A request answered before its body was read (a 413 on its size, its instances or its form
    fields; a 401) still has the rest of that body on the wire, and an HTTP/1.1 client sends
    all of it before it reads the answer: closing the connection on it would reset it, and on
    some systems the reset loses the answer. uvicorn reads such a rest as fast as it comes, so
    one client sending 60 MB bodies past a bound kept the event loop reading ~1 GB/s of bytes
    nobody needs while every other project waited for it.

    Here the answer is sent at once, marked `Connection: close`, and the rest is read at most
    `rate` bytes a second, shared by every refused request of this process (a token bucket
    touched only on the event loop), for at most `linger` seconds; then the connection closes.
    A client sending past the limit gets its answer as late as a link of that rate would give
    it; its bytes cost the API a bounded share of its loop.
    """

    def __init__(self, app: ASGIApp, *, rate: int, linger: float) -> None:
        self.app, self.rate, self.linger = app, rate, linger
        self._tokens, self._at = float(rate), time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope["headers"]):
            await self.app(scope, receive, send)
            return
        # A client that sent `Expect: 100-continue` sends its body only once the app reads it:
        # if the app never did, there is nothing on the wire to drain (and reading now would
        # send a "100 Continue" after the answer).
        waits = (b"expect", b"100-continue") in [(k, v.lower()) for k, v in scope["headers"]]
        body_read, refused = False, False

        async def tracked() -> Message:
            nonlocal body_read, waits
            waits = False
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read = True
            return message

        async def answer(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and not body_read:
                refused = True
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            elif (message["type"] == "http.response.body" and refused and not body_read
                  and not waits and not message.get("more_body", False)):
                await send({**message, "more_body": True})  # the whole answer, on the wire now
                await self._drain(tracked)
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app(scope, tracked, answer)

    async def _drain(self, receive: Receive) -> None:
        """Read and drop the rest of the body, within the shared rate and the linger time."""
        give_up = time.monotonic() + self.linger
        while time.monotonic() < give_up:
            now = time.monotonic()
            self._tokens = min(float(self.rate), self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < 0:
                await asyncio.sleep(min(-self._tokens / self.rate, give_up - now))
                continue
            message = await receive()
            self._tokens -= len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                return


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request declares a body (a Content-Length past 0, or a chunked one)."""
    for name, value in headers:
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
        if name == b"transfer-encoding":
            return True
    return False
