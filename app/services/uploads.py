"""Resumable (tus) uploads: their rows, the bytes they reserve, and their expiry."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app import logs
from app.config import Settings
from app.db.session import session_scope
from app.db.tables import Dataset, Upload, new_id, utcnow
from app.errors import Conflict, Problem, field_error
from app.services import datasets, owned, quotas
from app.storage import BlobStore

UPLOADING, INSPECTING, READY, FAILED, EXPIRED = "uploading", "inspecting", "ready", "failed", "expired"
# Bytes still to become a dataset: they count against stored_bytes from the upload's creation.
PENDING = (UPLOADING, INSPECTING)
log = logs.get_logger("pretrainer.services.uploads")


def reserved(*, session: Session, project: str, excluding: str | None = None) -> int:
    """Bytes the project's unfinished uploads have declared (Upload-Length)."""
    query = select(func.coalesce(func.sum(Upload.length), 0)).where(
        Upload.project == project, Upload.status.in_(PENDING))
    if excluding:
        query = query.where(Upload.id != excluding)
    return int(session.scalar(query) or 0)


def check_room(*, session: Session, project: str, defaults: dict[str, int], length: int,
               upload_id: str | None = None) -> None:
    """Refuse (QuotaExceeded) an upload of length bytes that the project's quotas cannot hold,
    counting its datasets and the bytes its other unfinished uploads declared."""
    quotas.check(session=session, project=project, defaults=defaults,
                 adding={"datasets": 0 if upload_id else 1})
    stored = quotas.of(session=session, project=project, defaults=defaults, name="stored_bytes")
    used = stored.used + reserved(session=session, project=project, excluding=upload_id)
    if used + length > stored.limit:
        raise quotas.exceeded("stored_bytes", limit=stored.limit, used=used, adding=length)


def start(*, session: Session, store: BlobStore, project: str, length: int,
          filename: str | None, name: str | None, defaults: dict[str, int],
          expiry_seconds: float) -> Upload:
    """Insert (and commit) an upload of length bytes that has received nothing yet, with an
    empty file for its bytes, once the project's quotas have room for them."""
    check_room(session=session, project=project, defaults=defaults, length=length)
    now = utcnow()
    row = Upload(id=new_id("up"), project=project, length=length, offset=0,
                 filename=(filename or "")[:255] or None, name=(name or "")[:255] or None,
                 status=UPLOADING if length else INSPECTING,
                 expires_at=now + timedelta(seconds=expiry_seconds), created_at=now,
                 updated_at=now)
    session.add(row)
    session.commit()
    store.resumable(row.id).touch()
    return row


def get(*, session: Session, project: str, upload_id: str) -> Upload:
    """One upload of the project, or NotFound (another project's id is not found either)."""
    return owned(session, Upload, upload_id, project=project, what="upload")


def get_open(*, session: Session, project: str, upload_id: str) -> Upload:
    """An upload whose bytes are still kept (uploading or past it), or 410 once they are gone."""
    row = get(session=session, project=project, upload_id=upload_id)
    if row.status == UPLOADING and row.expires_at <= utcnow():
        row.status = EXPIRED
        session.flush()
    if row.status == EXPIRED or (row.status == FAILED and row.offset < row.length):
        raise field_error(
            "upload_id", row.status, status=410,
            detail=f"upload {upload_id} is {row.status}: its bytes are gone; start a new upload")
    return row


def writable(*, session: Session, store: BlobStore, project: str, upload_id: str,
             defaults: dict[str, int], describe: Callable[[Exception], dict[str, Any]]) -> Upload:
    """The upload (committed), still uploading and still within the project's quotas; one past
    them is refused (failed with the problem describe gives, its bytes removed)."""
    row = get_open(session=session, project=project, upload_id=upload_id)
    if row.status != UPLOADING:
        raise field_error(
            "upload_id", row.status, status=409,
            detail=f"upload {upload_id} is complete ({row.status}); GET /v1/uploads/"
                   f"{upload_id} says what became of it")
    try:  # the quota may have been lowered, or other uploads finished, since its creation
        check_room(session=session, project=project, defaults=defaults, length=row.length,
                   upload_id=row.id)
    except Problem as exc:
        finish(session=session, upload=row, problem=describe(exc))
        session.commit()
        store.resumable(row.id).unlink(missing_ok=True)
        raise
    session.commit()
    return row


def touch(*, session: Session, upload: Upload, offset: int, expiry_seconds: float) -> None:
    """Record the upload's offset and push its expiry back: an upload in progress is alive."""
    now = utcnow()
    upload.offset, upload.updated_at = offset, now
    upload.expires_at = now + timedelta(seconds=expiry_seconds)
    if offset == upload.length:
        upload.status = INSPECTING
    session.flush()


def finish(*, session: Session, upload: Upload, dataset_id: str | None = None,
           problem: dict[str, Any] | None = None) -> None:
    """The upload became a dataset (ready) or was refused with problem (failed)."""
    upload.status = READY if dataset_id else FAILED
    upload.dataset_id, upload.problem, upload.updated_at = dataset_id, problem, utcnow()
    session.flush()


def delete(*, session: Session, project: str, upload_id: str) -> None:
    """Forget an upload (tus termination); the caller removes its bytes after commit."""
    row = get(session=session, project=project, upload_id=upload_id)
    if row.status == INSPECTING:
        raise Conflict(f"upload {upload_id} is being inspected; GET it until it is ready "
                       "or failed, then delete it or its dataset")
    session.delete(row)
    session.flush()


def expire(*, session: Session, now: datetime) -> list[str]:
    """Mark uploads that received nothing until their expiry as expired; return their ids."""
    ids = list(session.scalars(select(Upload.id).where(Upload.status == UPLOADING,
                                                       Upload.expires_at <= now)))
    if ids:
        session.execute(update(Upload).where(Upload.id.in_(ids))
                        .values(status=EXPIRED, updated_at=now))
    return ids


def pending_ids(*, session: Session, ids: list[str]) -> set[str]:
    """Those of ids whose bytes are still needed (uploading or being inspected)."""
    if not ids:
        return set()
    return set(session.scalars(select(Upload.id).where(Upload.id.in_(ids),
                                                       Upload.status.in_(PENDING))))


def interrupted(*, session: Session, before: datetime) -> list[Upload]:
    """Uploads left inspecting since before (the API process that inspected them stopped)."""
    return list(session.scalars(select(Upload).where(Upload.status == INSPECTING,
                                                     Upload.updated_at < before)))


def make_dataset(*, settings: Settings, store: BlobStore, upload_id: str,
                 describe: Callable[[Exception], dict[str, Any]]) -> None:
    """Make a completed upload a dataset, through the same inspection as POST /v1/datasets;
    a refused one keeps the problem+json body that describe gives its error."""
    with session_scope(settings.resolved_database_url) as session:
        row = session.get(Upload, upload_id)
        if row is None or row.status != INSPECTING:
            return
        try:
            dataset = _ingest(session=session, settings=settings, store=store, upload=row)
            finish(session=session, upload=row, dataset_id=dataset.id)
            log.info("upload.ready", upload_id=upload_id, dataset_id=dataset.id)
        # Whatever goes wrong, the upload must end failed with a problem: no request is
        # waiting to be answered, and a client polls the upload's row for the outcome.
        except Exception as exc:  # noqa: BLE001
            session.rollback()
            _refuse(session=session, upload_id=upload_id, problem=describe(exc))


def _ingest(*, session: Session, settings: Settings, store: BlobStore,
            upload: Upload) -> Dataset:
    with store.staging_dir() as folder:
        staged = folder / datasets.STAGED_NAME
        os.replace(store.resumable(upload.id), staged)
        received = datasets.Received(filename=upload.filename, name=upload.name,
                                     size=upload.length, sha256=_sha256(staged))
        return datasets.ingest(session=session, store=store, settings=settings,
                               project=upload.project, folder=folder, received=received)


def _refuse(*, session: Session, upload_id: str, problem: dict[str, Any]) -> None:
    if problem["status"] >= 500:  # a bug, not the upload's fault: its traceback is logged
        log.exception("upload.inspect_failed", upload_id=upload_id)
    else:
        log.info("upload.refused", upload_id=upload_id, status=problem["status"])
    row = session.get(Upload, upload_id)
    assert row is not None
    finish(session=session, upload=row, problem=problem)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()
