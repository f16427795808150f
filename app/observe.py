"""The ASGI middleware that gives each request an id and counts it per route template."""

from __future__ import annotations

import time
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.logs import REQUEST_ID_HEADER, request_id
from app.metrics import Metrics

_HEADER = REQUEST_ID_HEADER.lower().encode()


class ObserveMiddleware:
    """Request id in and out (bound to the log context), request count and latency per route.

    A plain ASGI middleware, not BaseHTTPMiddleware: it adds no task or stream per request.
    Routes are labelled by their template (`/v1/models/{model_id}/predict`), never the raw path,
    so ids in paths cannot blow up the label set; paths no route matched count as `unmatched`.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == _HEADER), None)
        rid = request_id(given)
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (_HEADER, rid.encode())]
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
            self.metrics.observe(scope["method"], _route(scope), status,
                                 time.perf_counter() - start)


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
