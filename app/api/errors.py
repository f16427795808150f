"""Every error leaves as RFC 9457 application/problem+json."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.data.features import FeatureError
from app.data.formats import IngestError
from app.data.images import ImageError
from app.data.training import JobDataError
from app.errors import Problem, field_error, title_and_slug
from app.logs import get_logger
from app.ml.artifacts import UnsafeArtifact
from app.ml.base import CapabilityError, InputError
from app.ml.exporting.spec import ExportRefused
from app.plots import NoPlot
from app.storage import StoreOwned

log = get_logger("pretrainer.api")
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
    return JSONResponse(_body(status, title, detail, slug, errors, extensions),
                        status_code=status, media_type=PROBLEM, headers=headers)


def _body(status: int, title: str, detail: str, slug: str, errors: list[dict[str, Any]] | None,
          extensions: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {**(extensions or {}), "type": TYPE_BASE + slug, "title": title,
                            "status": status, "detail": _scrub(detail)}
    if errors:
        body["errors"] = [{**e, "message": _scrub(str(e.get("message", "")))} for e in errors]
    return body


def problem_body(exc: Problem) -> dict[str, Any]:
    """The problem+json body of a Problem, to keep (a refused upload's) or to send."""
    return _body(exc.status, exc.title, exc.detail, exc.slug, exc.errors, exc.extensions)


def render(exc: Problem) -> JSONResponse:
    """The problem+json response of a Problem."""
    return problem(exc.status, exc.title, exc.detail, slug=exc.slug, errors=exc.errors,
                   headers=exc.headers, extensions=exc.extensions)


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
        return render(field_error("body", f"not valid JSON: {why}", detail=f"the request body "
                                  f"is not valid JSON ({why}); send {expected}"))
    whole = next((e for e in errors if tuple(e.get("loc", ())) in ((), ("body",))
                  and e.get("type") in _NOT_AN_OBJECT), None)
    if whole is None:
        return None
    ctype = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    # A body FastAPI did not parse (bytes) was refused for its Content-Type, not its JSON.
    if isinstance(whole.get("input"), bytes) and ctype != "application/json" \
            and not ctype.endswith("+json"):
        sent = f"as {ctype}" if ctype else "without a Content-Type header"
        return render(field_error("Content-Type", "must be application/json", status=415,
                                  detail=f"the request body was sent {sent}; send {expected}, "
                                  "with the header Content-Type: application/json"))
    kind = _JSON_KINDS.get(type(whole.get("input")), "not an object")
    return render(field_error("body", f"must be a JSON object, not {kind}",
                              detail=f"the request body is {kind}; send {expected}"))


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    whole = _whole_body(request, list(exc.errors()))
    if whole is not None:
        return whole
    errors = [{"field": _field(tuple(e.get("loc", ()))), "message": e.get("msg", "invalid")}
              for e in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return problem(422, "Unprocessable content", detail, slug="validation-error", errors=errors)


async def _problem(_: Request, exc: Problem) -> JSONResponse:
    return render(exc)


async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
        # FastAPI's answer to a JSON body that is not even text (e.g. not UTF-8): name the body.
        return render(field_error("body", "not UTF-8 encoded JSON", status=400,
                                  detail="the request body could not be read: send UTF-8 "
                                  "encoded JSON"))
    title, slug = title_and_slug(exc.status_code)
    return problem(exc.status_code, title, str(exc.detail), slug=slug,
                   headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("request.failed", path=request.url.path)
    return problem(500, "Internal server error", "an unexpected error occurred; it has been logged",
                   slug="internal")


# What an upload's IngestError `kind` means over HTTP (app/data itself knows no statuses).
INGEST_STATUS = {"invalid": 422, "too_large": 413, "unsupported": 415, "bad_request": 400}


def _message(exc: Exception, _: Request | None) -> str:
    return str(exc)


@dataclass(frozen=True)
class Rule:
    """How one domain error reads as a problem: its status, the field it is about, its detail."""

    status: Callable[[Any], int]
    field: Callable[[Any], str]
    detail: Callable[[Any, Request | None], str] = _message
    title: str | None = None  # None: the status's own title
    message: Callable[[Any], str] | None = None  # the field's own message; None: the detail


def _always(value: Any) -> Callable[[Any], Any]:
    return lambda _: value


def _unsafe(exc: UnsafeArtifact, request: Request | None) -> str:
    # The reason stays in the log: it names files and types, the client only needs the way out.
    model_id = request.path_params.get("model_id", "?") if request is not None else "?"
    log.error("model.artifact_refused", model_id=model_id, reason=str(exc))
    return (f"model {model_id}'s stored files failed the safety check and were not loaded; "
            "it cannot answer until it is trained again")


# The one place a domain error becomes a problem: services and routes let these rise.
DOMAIN_ERRORS: dict[type[Exception], Rule] = {
    IngestError: Rule(lambda e: INGEST_STATUS[e.kind], lambda e: e.field, lambda e, _: e.reason),
    FeatureError: Rule(_always(422), _always("features"), lambda e, _: e.message),
    ImageError: Rule(lambda e: INGEST_STATUS[e.kind], _always("instances"), lambda e, _: e.message),
    InputError: Rule(_always(422), _always("instances")),  # rows the model cannot take
    CapabilityError: Rule(_always(422), _always("model")),  # e.g. embed new points with t-SNE
    UnsafeArtifact: Rule(_always(500), _always("model"), _unsafe, title="Model artifact refused"),
    NoPlot: Rule(_always(409), _always("kind")),  # nothing to draw for this picture
    StoreOwned: Rule(_always(503), _always("store")),  # the blob store is another database's
    # A job's features/target/labels do not fit its dataset.
    JobDataError: Rule(_always(422), lambda e: e.field, lambda e, _: e.detail,
                       message=lambda e: e.message),
    # A format the model has no export in; the detail names the formats it has.
    ExportRefused: Rule(_always(422), _always("format")),
}


def as_problem(exc: Exception, request: Request | None = None) -> Problem:
    """The problem a domain error (a class in DOMAIN_ERRORS, or a subclass of one) becomes."""
    rule = next(r for cls, r in DOMAIN_ERRORS.items() if isinstance(exc, cls))
    detail, field = rule.detail(exc, request), rule.field(exc)
    message = rule.message(exc) if rule.message is not None else detail
    return Problem(detail, status=rule.status(exc), title=rule.title,
                   errors=[{"field": field, "message": message}])


def domain_problem(exc: Exception) -> Problem | None:
    """The problem any error raised outside a request answers (an upload inspected in the
    background keeps it), or None for an error that is a bug."""
    if isinstance(exc, Problem):
        return exc
    return as_problem(exc) if isinstance(exc, tuple(DOMAIN_ERRORS)) else None


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    return render(as_problem(exc, request))


def install(app: FastAPI) -> None:
    """Register the problem+json handlers."""
    for cls in DOMAIN_ERRORS:
        app.add_exception_handler(cls, _domain)
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(Problem, _problem)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
