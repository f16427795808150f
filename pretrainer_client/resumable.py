"""Resumable uploads over tus 1.0 (POST /v1/uploads): a dropped connection resumes from the
server's offset, with backoff, instead of starting again."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from pretrainer_client.errors import PretrainerError, check

TUS = {"Tus-Resumable": "1.0.0"}
# Files at least this large go through /v1/uploads by default: below it a retry from zero is
# cheap, and one multipart request is one round trip instead of three.
RESUMABLE_ABOVE = 64 * 1024**2
BLOCK = 1024 * 1024  # bytes read from the file per write to the socket
# Failures in a row (no byte gained between them) before giving up; the waits double from
# BACKOFF up to BACKOFF_MAX seconds.
RETRIES = 8
BACKOFF, BACKOFF_MAX = 0.5, 30.0
# Statuses worth another try: a lock still held by the dropped request (409), a server that
# is restarting or overloaded.
RETRY_STATUSES = {409, 423, 429, 500, 502, 503, 504}
ENDED = ("ready", "failed", "expired")


@dataclass
class Resumable:
    """A resumable upload in progress: its URL (to resume it elsewhere) and how far it got."""

    url: str
    length: int
    offset: int = 0


def metadata(**values: str | None) -> str:
    """Upload-Metadata: `key base64(value)` pairs."""
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}"
                    for k, v in values.items() if v)


def _blocks(file: IO[bytes], offset: int, end: int, sent: Callable[[int], None]) -> Iterator[bytes]:
    file.seek(offset)
    position = offset
    while position < end:
        block = file.read(min(BLOCK, end - position))
        if not block:
            return
        position += len(block)
        yield block
        sent(position)


class Uploader:
    """Sends one file over tus with an httpx.Client: create, then PATCH from the server's
    offset until done, HEADing after every failure."""

    def __init__(self, http: httpx.Client, *, chunk_size: int | None = None,
                 retries: int = RETRIES, report: Callable[[int, int], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.http, self.chunk_size, self.retries = http, chunk_size, retries
        self.report = report or (lambda sent, total: None)
        self.sleep = sleep

    def create(self, path: Path, name: str | None) -> Resumable:
        """Declare the upload (its length and names); nothing is sent yet."""
        length = path.stat().st_size
        r = check(self.http.post("/v1/uploads", headers={
            **TUS, "Upload-Length": str(length),
            "Upload-Metadata": metadata(filename=path.name, name=name)}))
        return Resumable(str(httpx.URL(self.http.base_url).join(r.headers["location"])), length)

    def offset(self, upload: Resumable) -> int:
        """The server's offset (HEAD): where sending resumes."""
        upload.offset = int(check(self.http.head(upload.url, headers=TUS)).headers["upload-offset"])
        return upload.offset

    def send(self, upload: Resumable, file: IO[bytes]) -> None:
        """PATCH the file from the upload's offset until the server holds all of it."""
        failures, wait = 0, BACKOFF
        while upload.offset < upload.length:
            before = upload.offset
            try:
                self._patch(upload, file)
            except (httpx.TransportError, PretrainerError) as exc:
                if isinstance(exc, PretrainerError) and exc.status not in RETRY_STATUSES:
                    raise
                failures = 0 if self._resync(upload) > before else failures + 1
                if failures > self.retries:
                    raise
                if failures:
                    self.sleep(wait)
                    wait = min(wait * 2, BACKOFF_MAX)
                else:
                    wait = BACKOFF

    def _resync(self, upload: Resumable) -> int:
        try:
            self.offset(upload)
        except (httpx.TransportError, PretrainerError) as exc:
            if isinstance(exc, PretrainerError) and exc.status not in RETRY_STATUSES:
                raise
        self.report(upload.offset, upload.length)
        return upload.offset

    def _patch(self, upload: Resumable, file: IO[bytes]) -> None:
        end = upload.length if not self.chunk_size else min(upload.length,
                                                            upload.offset + self.chunk_size)
        r = check(self.http.patch(upload.url, content=_blocks(
            file, upload.offset, end, lambda at: self.report(at, upload.length)), headers={
            **TUS, "Upload-Offset": str(upload.offset), "Content-Length": str(end - upload.offset),
            "Content-Type": "application/offset+octet-stream"}))
        upload.offset = int(r.headers["upload-offset"])

    def result(self, upload: Resumable, *, poll: float = 0.25,
               timeout: float | None = None) -> dict[str, Any]:
        """Wait for the server's inspection; the upload's JSON once ready, else the problem
        that refused it as a PretrainerError (as POST /v1/datasets would have raised it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            body = check(self.http.get(upload.url)).json()
            if body["status"] == "ready":
                return dict(body)
            if body["status"] in ENDED:
                problem = body.get("problem") or {"status": 410, "title": "Gone",
                                                  "detail": f"the upload {body['status']}"}
                raise PretrainerError(int(problem.get("status", 422)),
                                      str(problem.get("type", "about:blank")),
                                      str(problem.get("title", "")), str(problem.get("detail", "")),
                                      problem.get("errors"), problem=problem)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"upload {upload.url} still {body['status']}")
            self.sleep(poll)
