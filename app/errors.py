"""Errors that services raise and the HTTP layer maps to problem+json."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class Problem(Exception):
    """An error with an HTTP status, rendered as RFC 9457 problem+json."""

    status = 400
    title = "Bad request"
    slug = "bad-request"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None,
                 status: int | None = None, title: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers
        if status is not None:
            self.status = status
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


def field_error(field: str, message: str) -> Invalid:
    """A 422 about one field."""
    return Invalid(f"{field}: {message}", errors=[{"field": field, "message": message}])


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """"did you mean 'x'? valid names: …" for an unknown name, the closest ones first."""
    names = sorted(valid)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    guess = f"did you mean {' or '.join(f'{c!r}' for c in close)}? " if close else ""
    return f"{guess}valid names: {', '.join(names)}"
