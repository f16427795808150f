"""/v1/uploads: resumable uploads on the tus 1.0 protocol (core, creation, termination,
checksum, expiration); a completed upload becomes a dataset like POST /v1/datasets makes one."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import time
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import anyio.to_thread
from fastapi import APIRouter, Depends, Header, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from app import logs
from app.api.deps import ProjectDep, SessionDep, SettingsDep, StoreDep, get_caller
from app.api.errors import domain_problem, problem_body
from app.config import Settings
from app.db.tables import Upload
from app.errors import Problem, field_error
from app.schemas import UploadOut
from app.services import uploads
from app.storage import BlobStore

try:
    import fcntl
except ImportError:  # not on Windows: two PATCHes of one upload are then not kept apart
    fcntl = None  # type: ignore[assignment]

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])
log = logs.get_logger("pretrainer.api.tus")

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,termination,checksum,expiration"
CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}
OFFSET_STREAM = "application/offset+octet-stream"
# What a browser's tus client (tus-js-client) must be able to read from another origin.
EXPOSE = ("Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, Location, "
          "Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm")
# How long a PATCH waits for the one before it (a client that reconnected faster than the
# server saw its old connection drop) to let go of the upload's file.
LOCK_WAIT_SECONDS = 5.0
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such upload in this project"}}
# Inspections running in this process: a reference each, or asyncio may drop them.
_inspecting: set[asyncio.Task[None]] = set()


def _headers(**extra: str) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, "Access-Control-Expose-Headers": EXPOSE,
            "Cache-Control": "no-store", **extra}


def _expires(at: datetime) -> str:
    return format_datetime(at, usegmt=True)


async def tus_resumable(tus_resumable: Annotated[str | None, Header(
        alias="Tus-Resumable", description="the protocol version, 1.0.0")] = None) -> None:
    """Every tus request but OPTIONS names the protocol version this server speaks."""
    if tus_resumable != TUS_VERSION:
        raise field_error(
            "Tus-Resumable", "unsupported version", status=412,
            detail=f"Tus-Resumable must be {TUS_VERSION}, not {tus_resumable!r}",
            headers={"Tus-Version": TUS_VERSION})


TusDep = Depends(tus_resumable)
# The key first, then the protocol version: a caller without a key learns nothing else.
GUARDED = [Depends(get_caller), TusDep]


def parse_metadata(raw: str | None) -> dict[str, str]:
    """Upload-Metadata: comma-separated `key base64value` pairs (a key alone means empty)."""
    out: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in (raw or "").split(","))):
        key, _, value = pair.partition(" ")
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise field_error(
                f"Upload-Metadata.{key}", "not base64",
                detail=f"Upload-Metadata: the value of {key!r} is not base64 of UTF-8 "
                       "text") from exc
    return out


@router.options("", status_code=204, response_class=Response)
async def capabilities(settings: SettingsDep) -> Response:
    """The tus versions, extensions, checksum algorithms and largest upload this server takes."""
    return Response(status_code=204, headers=_headers(
        **{"Tus-Version": TUS_VERSION, "Tus-Extension": EXTENSIONS,
           "Tus-Max-Size": str(settings.max_upload_bytes),
           "Tus-Checksum-Algorithm": ",".join(CHECKSUMS)}))


@router.post("", status_code=201, response_class=Response, dependencies=GUARDED, responses={
    201: {"description": "created; Location is the upload's URL, PATCH its bytes there"},
    413: {"description": "Upload-Length over PRETRAINER_MAX_UPLOAD_BYTES or the project's "
                         "stored_bytes quota"},
    429: {"description": "the project is at its datasets quota"}})
def create_upload(request: Request, session: SessionDep, settings: SettingsDep,
                  store: StoreDep, project: ProjectDep,
                  upload_length: Annotated[int, Header(alias="Upload-Length", ge=0)],
                  upload_metadata: Annotated[str | None, Header(alias="Upload-Metadata")] = None,
                  ) -> Response:
    """Start a resumable upload of Upload-Length bytes (tus creation); metadata `filename`
    (its format, as in POST /v1/datasets) and `name` (the dataset's name)."""
    if upload_length > settings.max_upload_bytes:
        raise field_error(
            "Upload-Length", "too large", status=413,
            detail=f"Upload-Length {upload_length} is larger than the upload limit of "
                   f"{settings.max_upload_bytes} bytes (PRETRAINER_MAX_UPLOAD_BYTES)")
    meta = parse_metadata(upload_metadata)
    row = uploads.start(session=session, store=store, project=project, length=upload_length,
                        filename=meta.get("filename"), name=meta.get("name"),
                        defaults=settings.quota_defaults,
                        expiry_seconds=settings.upload_expiry_seconds)
    if row.status == uploads.INSPECTING:  # nothing to send: inspected (and refused) now
        inspect(settings=settings, store=store, upload_id=row.id)
    log.info("upload.created", upload_id=row.id, length=upload_length)
    return Response(status_code=201, headers=_headers(
        Location=f"{request.url.path.rstrip('/')}/{row.id}", **{
            "Upload-Expires": _expires(row.expires_at)}))


@router.head("/{upload_id}", status_code=200, response_class=Response, dependencies=GUARDED,
             responses={**NOT_FOUND, 410: {"description": "expired or refused: its bytes are gone"}})
def upload_offset(upload_id: str, session: SessionDep, store: StoreDep,
                  project: ProjectDep) -> Response:
    """How many bytes of the upload the server holds (Upload-Offset): resume from there."""
    row = uploads.get_open(session=session, project=project, upload_id=upload_id)
    session.commit()
    offset = row.offset
    if row.status == uploads.UPLOADING:  # the file, not the row: a PATCH may be writing now
        offset = _settled_size(store.resumable(row.id), row.offset)
    headers = _headers(**{"Upload-Offset": str(offset), "Upload-Length": str(row.length)})
    if row.status == uploads.UPLOADING:
        headers["Upload-Expires"] = _expires(row.expires_at)
    return Response(status_code=200, headers=headers)


@router.patch("/{upload_id}", status_code=204, response_class=Response, dependencies=GUARDED,
              openapi_extra={"requestBody": {"required": True, "content": {OFFSET_STREAM: {
                  "schema": {"type": "string", "format": "binary"}}}}},
              responses={**NOT_FOUND,
                         409: {"description": "Upload-Offset is not the upload's offset (HEAD "
                                              "it), or another PATCH is writing it"},
                         410: {"description": "expired or refused: its bytes are gone"},
                         413: {"description": "past Upload-Length, or past the project's "
                                              "stored_bytes quota (the upload is removed)"},
                         415: {"description": f"Content-Type is not {OFFSET_STREAM}"},
                         460: {"description": "Upload-Checksum does not match the chunk; the "
                                              "chunk is discarded"}})
async def append(upload_id: str, request: Request, session: SessionDep, settings: SettingsDep,
                 store: StoreDep, project: ProjectDep,
                 upload_offset: Annotated[int, Header(alias="Upload-Offset", ge=0)],
                 upload_checksum: Annotated[str | None, Header(alias="Upload-Checksum")] = None,
                 ) -> Response:
    """Append the body to the upload at Upload-Offset (streamed to disk, never held whole);
    the last byte starts the dataset's inspection (GET /v1/uploads/{id} says how it went)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != OFFSET_STREAM:
        raise field_error(
            "Content-Type", f"{OFFSET_STREAM} expected", status=415,
            detail=f"a PATCH sends the bytes as Content-Type {OFFSET_STREAM}")
    algorithm, expected = _checksum(upload_checksum)
    row = await run_in_threadpool(lambda: uploads.writable(
        session=session, store=store, project=project, upload_id=upload_id,
        defaults=settings.quota_defaults, describe=_describe))
    path = store.resumable(row.id)
    with await anyio.to_thread.run_sync(open, path, "r+b") as fh:
        await _lock(fh, upload_id)
        start = os.fstat(fh.fileno()).st_size
        if upload_offset != start:
            raise field_error(
                "Upload-Offset", f"expected {start}", status=409,
                detail=f"Upload-Offset is {upload_offset} but the upload holds {start} bytes: "
                       f"HEAD it and resume from {start}")
        end = await _receive(request, fh, start, row.length, algorithm, expected)
    await run_in_threadpool(_record, session, settings, row, end)
    if end == row.length:
        _inspect_later(settings, store, row.id)
    headers = _headers(**{"Upload-Offset": str(end)})
    if end < row.length:
        headers["Upload-Expires"] = _expires(row.expires_at)
    return Response(status_code=204, headers=headers)


def _checksum(header: str | None) -> tuple[str | None, bytes | None]:
    if header is None:
        return None, None
    name, _, value = header.strip().partition(" ")
    if name not in CHECKSUMS:
        raise field_error(
            "Upload-Checksum", "unsupported algorithm", status=400,
            detail=f"Upload-Checksum algorithm {name!r} is not supported; use one of "
                   f"{', '.join(CHECKSUMS)}")
    try:
        return name, base64.b64decode(value.strip(), validate=True)
    except binascii.Error as exc:
        raise field_error(
            "Upload-Checksum", "not base64", status=400,
            detail="Upload-Checksum: the digest is not base64") from exc


def _settled_size(path: Path, default: int) -> int:
    """The file's size once no PATCH writes it (waiting up to LOCK_WAIT_SECONDS): a client
    that lost its connection asks at once, while the server still writes what arrived."""
    try:
        with open(path, "rb") as fh:
            deadline = time.monotonic() + LOCK_WAIT_SECONDS
            while fcntl is not None and time.monotonic() < deadline:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(0.02)
            return os.fstat(fh.fileno()).st_size
    except FileNotFoundError:  # only open() raises it: the upload's file is gone
        return default


async def _lock(fh: BinaryIO, upload_id: str) -> None:
    if fcntl is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOCK_WAIT_SECONDS
    while True:
        try:  # released when the file closes, whatever ends the request
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError as exc:
            if loop.time() > deadline:
                raise field_error(
                    "upload_id", "being written", status=409,
                    detail=f"another PATCH is writing upload {upload_id}; HEAD it and "
                           "resume once that one ends") from exc
            await asyncio.sleep(0.05)


async def _receive(request: Request, fh: BinaryIO, start: int, length: int,
                   algorithm: str | None, expected: bytes | None) -> int:
    """Write the body at start; return the new offset. A checksummed chunk is kept whole or
    not at all; an unchecked one keeps what arrived before a dropped connection."""
    fh.seek(start)
    digest = CHECKSUMS[algorithm]() if algorithm else None
    end = start
    try:
        async for chunk in request.stream():
            if end + len(chunk) > length:
                fh.truncate(start)
                raise field_error(
                    "body", "past Upload-Length", status=413,
                    detail=f"the body goes past Upload-Length ({length} bytes)")
            fh.write(chunk)
            end += len(chunk)
            if digest is not None:
                digest.update(chunk)
    except ClientDisconnect:
        log.info("upload.disconnected", at=end)
        if digest is not None:
            fh.truncate(start)
            return start
    fh.flush()
    if digest is not None and digest.digest() != expected:
        fh.truncate(start)
        raise field_error(
            "Upload-Checksum", "mismatch", status=460,
            detail=f"the chunk's {algorithm} does not match Upload-Checksum; it was "
                   f"discarded, send it again from offset {start}")
    return end


def _record(session: Session, settings: Settings, row: Upload, end: int) -> None:
    uploads.touch(session=session, upload=row, offset=end,
                  expiry_seconds=settings.upload_expiry_seconds)
    session.commit()


def _inspect_later(settings: Settings, store: BlobStore, upload_id: str) -> None:
    task = asyncio.get_running_loop().create_task(
        run_in_threadpool(inspect, settings=settings, store=store, upload_id=upload_id))
    _inspecting.add(task)
    task.add_done_callback(_inspecting.discard)


def inspect(*, settings: Settings, store: BlobStore, upload_id: str) -> None:
    """Make a completed upload a dataset; a refusal keeps the problem a request would get."""
    uploads.make_dataset(settings=settings, store=store, upload_id=upload_id, describe=_describe)


def _describe(exc: Exception) -> dict[str, Any]:
    """The problem+json body of an error raised while inspecting (a bug: a 500)."""
    problem = domain_problem(exc)
    if problem is not None:
        return problem_body(problem)
    return problem_body(Problem("the upload could not be inspected; it has been logged",
                                status=500))


@router.delete("/{upload_id}", status_code=204, response_class=Response, dependencies=GUARDED,
               responses=NOT_FOUND)
def terminate(upload_id: str, session: SessionDep, store: StoreDep, project: ProjectDep) -> Response:
    """Stop an upload and remove its bytes (tus termination); a dataset it became stays."""
    uploads.delete(session=session, project=project, upload_id=upload_id)
    session.commit()
    store.resumable(upload_id).unlink(missing_ok=True)
    return Response(status_code=204, headers=_headers())


@router.get("/{upload_id}", response_model=UploadOut, responses=NOT_FOUND)
def get_upload(upload_id: str, session: SessionDep, project: ProjectDep) -> UploadOut:
    """The upload's state: offset, length, status and, once inspected, its dataset or problem."""
    row = uploads.get(session=session, project=project, upload_id=upload_id)
    return UploadOut.from_row(row)
