"""Every error leaves as RFC 9457 application/problem+json."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.data.formats import IngestError
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


# pydantic's error types for a body that is not an object at all (bytes, a list, a string).
_NOT_AN_OBJECT = {"model_attributes_type", "model_type", "dict_type"}
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def _expected(request: Request) -> str:
    """What the route's body is: a JSON object with its fields named, required ones marked."""
    route = request.scope.get("route")
    field = getattr(route, "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        schema = model.model_json_schema()
    else:  # a route that reads its own body documents it in openapi_extra
        extra = getattr(route, "openapi_extra", None) or {}
        content = extra.get("requestBody", {}).get("content", {})
        schema = content.get("application/json", {}).get("schema", {})
    required = set(schema.get("required", ()))
    names = [f"{name} (required)" if name in required else name
             for name in schema.get("properties", {})]
    return f"a JSON object with the fields {', '.join(names)}" if names else "a JSON object"


def _whole_body(request: Request, errors: list[dict[str, Any]]) -> JSONResponse | None:
    """The problem for a body that is not JSON, not sent as JSON, or not an object; else None."""
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    expected = _expected(request)
    if bad_json is not None:
        loc = bad_json.get("loc", ())
        at = f" at character {loc[1] + 1}" if len(loc) > 1 and isinstance(loc[1], int) else ""
        why = f"{bad_json.get('ctx', {}).get('error', 'JSON decode error')}{at}"
        return problem(422, "Unprocessable content", f"the request body is not valid JSON "
                       f"({why}); send {expected}", slug="validation-error",
                       errors=[{"field": "body", "message": f"not valid JSON: {why}"}])
    whole = next((e for e in errors if tuple(e.get("loc", ())) in ((), ("body",))
                  and e.get("type") in _NOT_AN_OBJECT), None)
    if whole is None:
        return None
    ctype = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    # A body FastAPI did not parse (bytes) was refused for its Content-Type, not its JSON.
    if isinstance(whole.get("input"), bytes) and ctype != "application/json" \
            and not ctype.endswith("+json"):
        sent = f"as {ctype}" if ctype else "without a Content-Type header"
        return problem(415, "Unsupported media type", f"the request body was sent {sent}; send "
                       f"{expected}, with the header Content-Type: application/json",
                       slug="unsupported-media-type",
                       errors=[{"field": "Content-Type", "message": "must be application/json"}])
    kind = _JSON_KINDS.get(type(whole.get("input")), "not an object")
    return problem(422, "Unprocessable content", f"the request body is {kind}; send {expected}",
                   slug="validation-error",
                   errors=[{"field": "body", "message": f"must be a JSON object, not {kind}"}])


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    whole = _whole_body(request, list(exc.errors()))
    if whole is not None:
        return whole
    errors = [{"field": _field(tuple(e.get("loc", ()))), "message": e.get("msg", "invalid")}
              for e in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return problem(422, "Unprocessable content", detail, slug="validation-error", errors=errors)


async def _problem(_: Request, exc: Problem) -> JSONResponse:
    return problem(exc.status, exc.title, exc.detail, slug=exc.slug, errors=exc.errors,
                   headers=exc.headers, extensions=exc.extensions)


# What each kind of refused upload answers.
_INGEST_STATUS = {"invalid": 422, "too_large": 413, "unsupported": 415, "bad_request": 400}


def domain_problem(exc: Exception) -> Problem | None:
    """The problem a domain error answers, or None for an error that is a bug."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, IngestError):
        return Problem(exc.reason, status=_INGEST_STATUS[exc.kind],
                       errors=[{"field": exc.field, "message": exc.reason}])
    return None


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    found = domain_problem(exc)
    return await (_problem(request, found) if found is not None else _unexpected(request, exc))


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
    app.add_exception_handler(IngestError, _domain)
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
