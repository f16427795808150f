"""Errors: every 4xx/5xx of the API as an exception carrying its problem+json fields."""

from __future__ import annotations

from typing import Any

import httpx


class PretrainerError(Exception):
    """An error response: status, type, title, detail and the field errors of problem+json."""

    def __init__(self, status: int, type: str, title: str, detail: str,
                 errors: list[dict[str, Any]] | None = None,
                 headers: httpx.Headers | None = None,
                 problem: dict[str, Any] | None = None) -> None:
        self.status = status
        self.headers = headers if headers is not None else httpx.Headers()
        # The whole problem object, extension members too (e.g. `quota`: name, limit, used).
        self.problem = problem or {}
        self.type = type
        self.title = title
        self.detail = detail
        self.errors = errors or []
        super().__init__(f"{status} {title}: {detail}")

    @classmethod
    def from_response(cls, response: httpx.Response) -> PretrainerError:
        """Read the problem+json body (or make one from a body that is not)."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            text = response.text.strip()[:500] or response.reason_phrase
            return cls(response.status_code, "about:blank", response.reason_phrase, text,
                       headers=response.headers)
        return cls(response.status_code, str(body.get("type", "about:blank")),
                   str(body.get("title", response.reason_phrase)),
                   str(body.get("detail", "")), body.get("errors"), headers=response.headers,
                   problem=body)


class JobFailed(Exception):
    """A followed job ended failed or cancelled; the job (with its error) is attached."""

    def __init__(self, job: Any) -> None:
        self.job = job
        reason = f": {job.error.type}: {job.error.message}" if job.error else ""
        super().__init__(f"job {job.id} {job.status}{reason}")


def check(response: httpx.Response) -> httpx.Response:
    """The response itself when it succeeded; PretrainerError otherwise."""
    if response.status_code >= 400:
        raise PretrainerError.from_response(response)
    return response
