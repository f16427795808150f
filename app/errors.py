"""Errors that services raise and the HTTP layer maps to problem+json."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

# The one place a status gets its problem title and `type` slug: a problem's type always
# matches its status, whichever class or code path raised it.
STATUSES: dict[int, tuple[str, str]] = {
    400: ("Bad request", "bad-request"),
    401: ("Unauthorized", "unauthorized"),
    404: ("Not found", "not-found"),
    405: ("Method not allowed", "method-not-allowed"),
    409: ("Conflict", "conflict"),
    410: ("Gone", "gone"),
    412: ("Precondition failed", "precondition-failed"),
    413: ("Content too large", "too-large"),
    415: ("Unsupported media type", "unsupported-media-type"),
    422: ("Unprocessable content", "validation-error"),
    429: ("Too many requests", "too-many-requests"),
    460: ("Checksum mismatch", "checksum-mismatch"),  # tus checksum extension
    500: ("Internal server error", "internal"),
    503: ("Service unavailable", "unavailable"),
}


def title_and_slug(status: int) -> tuple[str, str]:
    """The problem title and type slug of an HTTP status."""
    return STATUSES.get(status, ("HTTP error", f"http-{status}"))


class Problem(Exception):
    """An error with an HTTP status, rendered as RFC 9457 problem+json."""

    status = 400
    title = "Bad request"
    slug = "bad-request"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None,
                 status: int | None = None, title: str | None = None,
                 headers: dict[str, str] | None = None,
                 extensions: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers
        self.extensions = extensions  # extra members of the problem object (RFC 9457 §3.2)
        if status is not None and status != self.status:
            self.status = status
            self.title, self.slug = title_and_slug(status)
        if title is not None:
            self.title = title


class Unauthorized(Problem):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, errors=[{"field": "Authorization", "message": detail}],
                         headers={"WWW-Authenticate": 'Bearer realm="pretrainer"'})


class NotFound(Problem):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(Problem):
    status, title, slug = 409, "Conflict", "conflict"


class Gone(Problem):
    status, title, slug = 410, "Gone", "gone"


class TooMany(Problem):
    status, title, slug = 429, "Too many requests", "too-many-requests"


class Invalid(Problem):
    status, title, slug = 422, "Unprocessable content", "validation-error"


class TooLarge(Problem):
    status, title, slug = 413, "Content too large", "too-large"


class Unsupported(Problem):
    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class QuotaExceeded(Problem):
    """A project is at one of its quotas: 429 for counts and concurrency, 413 for bytes."""

    status, title, slug = 429, "Too many requests", "too-many-requests"

    def __init__(self, quota: str, *, limit: int, used: int, detail: str,
                 status: int = 429, retry_after: int | None = None) -> None:
        super().__init__(detail, errors=[{"field": f"quota.{quota}",
                                          "message": f"limit {limit}, in use {used}"}],
                         headers={"Retry-After": str(retry_after)} if retry_after else None,
                         extensions={"quota": {"name": quota, "limit": limit, "used": used}})
        self.status = status
        self.title, self.slug = title_and_slug(status)
        self.quota, self.limit, self.used = quota, limit, used


# The class a field error of each status is, so `except NotFound` catches it like any other.
_BY_STATUS: dict[int, type[Problem]] = {404: NotFound, 409: Conflict, 410: Gone, 413: TooLarge,
                                        415: Unsupported, 422: Invalid, 429: TooMany}


def field_error(field: str, message: str, *, status: int = 422, detail: str | None = None,
                headers: dict[str, str] | None = None) -> Problem:
    """A problem about one field: a 422 unless status says otherwise (a 413 body, a 409 state).

    The detail reads "field: message" unless a fuller sentence is given.
    """
    cls = _BY_STATUS.get(status, Problem)
    return cls(f"{field}: {message}" if detail is None else detail,
               errors=[{"field": field, "message": message}], status=status, headers=headers)


def field_errors(errors: list[tuple[str, str]], *, lead: str = "") -> Invalid:
    """A 422 about several fields at once, each (field, message); the detail reads
    lead + "field: message; field: message"."""
    return Invalid(lead + "; ".join(f"{field}: {message}" for field, message in errors),
                   errors=[{"field": field, "message": message} for field, message in errors])


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """"did you mean 'x'? valid names: …" for an unknown name, the closest ones first."""
    names = sorted(valid)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    guess = f"did you mean {' or '.join(f'{c!r}' for c in close)}? " if close else ""
    return f"{guess}valid names: {', '.join(names)}"
