"""Stream a multipart upload to a staged file, hashing and bounding it as the bytes arrive."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from app.errors import TooLarge, field_error
from app.services.datasets import Received
from app.services.quotas import Quota, exceeded

MAX_TEXT_FIELD = 4096


@dataclass
class _Parts:
    """What the multipart body held: the staged file and the small text fields."""

    path: Path
    filename: str | None = None
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    has_file: bool = False


@dataclass(frozen=True)
class FormLimits:
    """Bounds on the non-file parts of an upload: how many, and their bytes with all headers."""

    max_fields: int = 16
    max_bytes: int = 64 * 1024


class _Receiver:
    """python-multipart callbacks: file parts go to disk, text parts to memory (bounded).

    Each text part is capped, and so are their number and, with every part's headers, their
    total bytes: the upload route is exempt from the body cap, so nothing else bounds them.
    """

    def __init__(self, staged: Path, limit: int, form: FormLimits,
                 quota: Quota | None = None) -> None:
        self.out = _Parts(path=staged)
        self.limit = limit
        self.form = form
        self.fields = 0
        self.form_bytes = 0
        self.quota = quota
        self.hash = hashlib.sha256()
        self.fh: BinaryIO | None = None
        self._header_field = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._is_file = False
        self._text = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._begin, "on_part_data": self._data, "on_part_end": self._end,
            "on_header_field": self._hfield, "on_header_value": self._hvalue,
            "on_headers_finished": self._headers_done,
        }

    def _begin(self) -> None:
        self._headers, self._text, self._name, self._is_file = {}, bytearray(), "", False

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self._header_field = data[start:end].lower()

    def _hvalue(self, data: bytes, start: int, end: int) -> None:
        self._count(end - start)
        self._headers[self._header_field] = self._headers.get(self._header_field, b"") + data[start:end]

    def _count(self, n: int) -> None:
        self.form_bytes += n
        if self.form_bytes > self.form.max_bytes:
            raise field_error(
                "form", "fields too large", status=413,
                detail=f"the form's fields and part headers take more than "
                       f"{self.form.max_bytes} bytes, the limit "
                       "(PRETRAINER_MAX_FORM_FIELD_BYTES); send the data as the `file` part")

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if self._name == "file":
            if self.out.has_file:
                raise field_error(
                    "file", "repeated",
                    detail="only one file per upload")
            self._is_file = True
            self.out.has_file = True
            raw = options.get(b"filename")
            self.out.filename = raw.decode("utf-8", "replace") if raw is not None else None
            # Open across parser callbacks, so no `with`: _end and close() close it.
            self.fh = open(self.out.path, "wb")  # noqa: SIM115
            return
        self.fields += 1
        if self.fields > self.form.max_fields:
            raise field_error(
                "form", "too many fields", status=413,
                detail=f"the form has more than {self.form.max_fields} fields besides the "
                       f"file, the limit (PRETRAINER_MAX_FORM_FIELDS)")

    def _data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._is_file and self.fh is not None:
            self.out.size += len(chunk)
            if self.out.size > self.limit:
                raise TooLarge(f"the file is larger than the upload limit of {self.limit} bytes "
                               "(PRETRAINER_MAX_UPLOAD_BYTES)")
            if self.quota and self.quota.used + self.out.size > self.quota.limit:
                raise exceeded(self.quota.name, limit=self.quota.limit, used=self.quota.used,
                               adding=self.out.size)
            self.hash.update(chunk)
            self.fh.write(chunk)
        else:
            self._count(len(chunk))
            self._text += chunk
            if len(self._text) > MAX_TEXT_FIELD:
                raise field_error(self._name or "form", f"longer than {MAX_TEXT_FIELD} bytes")

    def _end(self) -> None:
        if self._is_file and self.fh is not None:
            self.fh.close()
            self.fh = None
        elif self._name:
            try:
                self.out.fields[self._name] = self._text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise field_error(self._name, "is not UTF-8 text") from exc

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def _boundary(request: Request) -> bytes:
    ctype, options = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or not options.get(b"boundary"):
        raise field_error(
            "file", "multipart/form-data expected", status=415,
            detail="send the dataset as multipart/form-data with a `file` part "
                   "(curl -F file=@data.csv)")
    return options[b"boundary"]


async def receive(request: Request, staged: Path, limit: int,
                  form: FormLimits | None = None, quota: Quota | None = None) -> Received:
    """Stream the request body into staged; the caller removes staged on any error.

    quota: the project's stored_bytes quota, checked as the file's bytes arrive.
    """
    form = form or FormLimits()
    declared = request.headers.get("content-length")
    # A multipart body is the file plus its framing (boundaries, part headers) and the fields.
    framing = form.max_bytes + 64 * 1024
    file_at_least = int(declared) - framing if declared and declared.isdigit() else 0
    if file_at_least > limit:
        raise TooLarge(f"the upload is larger than the limit of {limit} bytes (PRETRAINER_MAX_UPLOAD_BYTES)")
    if quota and quota.used + file_at_least > quota.limit:
        raise exceeded(quota.name, limit=quota.limit, used=quota.used, adding=file_at_least)
    receiver = _Receiver(staged, limit, form, quota)
    parser = MultipartParser(_boundary(request), receiver.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise field_error(
            "file", "malformed",
            detail=f"malformed multipart body: {exc}") from exc
    finally:
        receiver.close()
    got = receiver.out
    if not got.has_file:
        raise field_error("file", "missing: send the dataset as the multipart part named `file`")
    return Received(filename=got.filename, name=got.fields.get("name"), size=got.size,
                    sha256=receiver.hash.hexdigest())
