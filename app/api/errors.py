"""Every error leaves as RFC 9457 application/problem+json."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import Problem, title_and_slug

log = logging.getLogger("pretrainer.api")
PROBLEM = "application/problem+json"
TYPE_BASE = "https://pretrainer.dev/problems/"


# A Python object's repr with its memory address (`<ast.Call object at 0x7f…>`), as a parser's
# message may carry one: internal text, never part of an answer, whichever error quoted it.
_REPR = re.compile(r"<[^<>]{0,200}? at 0x[0-9a-fA-F]+>|\b0x[0-9a-fA-F]{8,}\b")


def _scrub(text: str) -> str:
    return _REPR.sub("<object>", text) if "0x" in text else text


def problem(status: int, title: str, detail: str, *, slug: str,
            errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None,
            extensions: dict[str, Any] | None = None) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, Any] = {**(extensions or {}), "type": TYPE_BASE + slug, "title": title,
                            "status": status, "detail": _scrub(detail)}
    if errors:
        body["errors"] = [{**e, "message": _scrub(str(e.get("message", "")))} for e in errors]
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "body"  # an error of the whole body (not JSON at all) has no loc


async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"field": _field(tuple(e.get("loc", ()))), "message": e.get("msg", "invalid")}
              for e in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return problem(422, "Unprocessable content", detail, slug="validation-error", errors=errors)


async def _problem(_: Request, exc: Problem) -> JSONResponse:
    return problem(exc.status, exc.title, exc.detail, slug=exc.slug, errors=exc.errors,
                   headers=exc.headers, extensions=exc.extensions)


async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        # FastAPI's answer to a JSON body that is not even text (e.g. not UTF-8): name the body.
        return problem(400, "Bad request", "the request body could not be read: send UTF-8 "
                       "encoded JSON", slug="bad-request",
                       errors=[{"field": "body", "message": "not UTF-8 encoded JSON"}])
    title, slug = title_and_slug(exc.status_code)
    return problem(exc.status_code, title, str(exc.detail), slug=slug,
                   headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("request.failed path=%s", request.url.path)
    return problem(500, "Internal server error", "an unexpected error occurred; it has been logged",
                   slug="internal")


def install(app: FastAPI) -> None:
    """Register the problem+json handlers."""
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(Problem, _problem)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
