"""/v1/datasets: upload (streamed), list, show, delete."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path, PurePosixPath

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app import storage
from app.api import uploads
from app.api.deps import (
    IdempotencyHeader,
    Limit,
    Offset,
    ProjectDep,
    SessionDep,
    SettingsDep,
    StoreDep,
)
from app.config import Settings
from app.data.export import csv_chunks
from app.data.images import ZipLimits
from app.data.ingest import IngestError, inspect_file
from app.db.tables import Dataset, new_id
from app.errors import Invalid, Problem
from app.schemas import DatasetList, DatasetOut, Page
from app.services import datasets, idempotency, quotas
from app.storage import BlobStore

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary",
                         "description": "CSV with a header, Parquet, NPY, JSONL, or a ZIP "
                                        "of PNG/JPEG images (a folder per class if labelled)"},
                "name": {"type": "string", "description": "defaults to the file name"},
            },
        }}},
    }
}


def _ingest_problem(exc: IngestError) -> Problem:
    # Title and type follow the status (app.errors.STATUSES), never a fixed "bad-request".
    return Problem(exc.detail, status=exc.status, errors=exc.errors())


@router.post("", status_code=201, response_model=DatasetOut, openapi_extra=UPLOAD_BODY,
             responses={413: {"description": "larger than PRETRAINER_MAX_UPLOAD_BYTES, a ZIP "
                                              "over a PRETRAINER_MAX_ZIP_* limit, or past the "
                                              "project's stored_bytes quota"},
                        429: {"description": "the project is at its datasets quota"},
                        415: {"description": "not multipart, or a format it does not read"},
                        422: {"description": "empty, ragged, undecodable, unsafe ZIP member: "
                                             "says which row/column/member"}})
async def upload(request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep,
                 project: ProjectDep, idempotency_key: IdempotencyHeader = None) -> DatasetOut:
    """Upload a dataset: the body is streamed to the blob store, then its schema is inferred.

    With an Idempotency-Key header, a retry returns the first upload's dataset.
    """
    key_ = idempotency.check_key(idempotency_key) if idempotency_key is not None else None
    if key_ and (first := idempotency.find(session=session, project=project, route="datasets",
                                           key=key_, fingerprint=None)):
        return DatasetOut.from_row(datasets.get(session=session, project=project, dataset_id=first))
    # Quotas first: a project at its datasets quota sends no bytes; stored_bytes is checked
    # while the bytes stream in, and both again (with the real size) before the row is written.
    stored = await run_in_threadpool(_quota_room, session, project, settings)
    # The upload and anything derived from it (image arrays) are staged in one folder and
    # published together; the folder is removed on any error before that.
    with store.staging_dir() as folder:
        staged = folder / "data.upload"
        got = await uploads.receive(request, staged, settings.max_upload_bytes, uploads.FormLimits(
            max_fields=settings.max_form_fields, max_bytes=settings.max_form_field_bytes),
            quota=stored)
        # An upload to S3 takes a while: not on the event loop.
        row = await run_in_threadpool(lambda: ingest(
            session=session, store=store, settings=settings, project=project, folder=folder,
            staged=staged, filename=got.filename, name=got.fields.get("name"), size=got.size,
            sha256=got.sha256))
    try:
        if key_:
            idempotency.remember(session=session, project=project, route="datasets", key=key_,
                                 fingerprint=got.sha256, resource_id=row.id)
        session.commit()
    except IntegrityError:  # the same key raced in from another request: keep the first
        session.rollback()
        store.delete(storage.dataset_prefix(row.id))
        first = idempotency.find(session=session, project=project, route="datasets",
                                 key=key_ or "", fingerprint=None)
        return DatasetOut.from_row(datasets.get(session=session, project=project,
                                                dataset_id=first or ""))
    except BaseException:
        store.delete(storage.dataset_prefix(row.id))
        raise
    return DatasetOut.from_row(row)


def ingest(*, session: Session, store: BlobStore, settings: Settings, project: str, folder: Path,
           staged: Path, filename: str | None, name: str | None, size: int,
           sha256: str) -> Dataset:
    """Inspect a file staged in folder, publish the folder and write the dataset's row
    (uncommitted): the one path from received bytes to a dataset, multipart or resumable."""
    try:
        info = inspect_file(staged, filename, derived_dir=folder, zip_limits=_zip_limits(settings),
                            max_columns=settings.max_dataset_columns)
    except IngestError as exc:
        raise _ingest_problem(exc) from exc
    dataset_id = new_id("ds")
    key = storage.dataset_key(dataset_id, info.format)
    staged.rename(folder / PurePosixPath(key).name)
    name = (name or filename or dataset_id).strip()[:255] or dataset_id
    store.publish(folder, storage.dataset_prefix(dataset_id))
    try:
        # Both quotas again with the real size: other uploads may have landed meanwhile.
        quotas.check(session=session, project=project, defaults=settings.quota_defaults,
                     adding={"datasets": 1, "stored_bytes": size})
        return datasets.create(session=session, project=project, dataset_id=dataset_id, fields={
            "name": name, "kind": info.kind, "format": info.format, "n_rows": info.n_rows,
            "columns": [asdict(c) for c in info.columns], "size_bytes": size,
            "sha256": sha256, "blob_key": key, "details": info.details})
    except BaseException:
        store.delete(storage.dataset_prefix(dataset_id))
        raise


def _quota_room(session: Session, project: str, settings: Settings) -> quotas.Quota:
    """The project's stored_bytes quota, once its datasets quota has room for one more."""
    quotas.check(session=session, project=project, defaults=settings.quota_defaults,
                 adding={"datasets": 1}, locked=False)  # not held while the bytes stream
    return quotas.of(session=session, project=project, defaults=settings.quota_defaults,
                     name="stored_bytes")


def _zip_limits(settings: Settings) -> ZipLimits:
    # app.data takes plain values, not Settings: it is used outside the API too.
    return ZipLimits(max_members=settings.max_zip_members,
                     max_uncompressed_bytes=settings.max_zip_uncompressed_bytes,
                     max_ratio=settings.max_zip_ratio, max_image_pixels=settings.max_image_pixels,
                     max_decoded_bytes=settings.max_dataset_decoded_bytes,
                     max_decoded_ratio=settings.max_dataset_decoded_ratio,
                     decoded_floor=settings.max_dataset_decoded_floor)


@router.get("", response_model=DatasetList)
def list_datasets(session: SessionDep, project: ProjectDep, settings: SettingsDep,
                  limit: Limit = 50, offset: Offset = 0) -> DatasetList:
    """The project's datasets, newest first (wide schemas cut to their first columns)."""
    rows, total = datasets.list_(session=session, project=project, limit=limit, offset=offset)
    return DatasetList(items=[DatasetOut.from_row(r, max_columns=settings.list_columns)
                              for r in rows], total=total,
                       next=Page.next_offset(offset, len(rows), total))


@router.get("/{dataset_id}", response_model=DatasetOut, responses={404: {"description": "no such dataset"}})
def get_dataset(dataset_id: str, session: SessionDep, project: ProjectDep) -> DatasetOut:
    """One dataset with its inferred schema."""
    return DatasetOut.from_row(datasets.get(session=session, project=project, dataset_id=dataset_id))


@router.delete("/{dataset_id}", status_code=204, response_class=Response,
               responses={404: {"description": "no such dataset"},
                          409: {"description": "a queued or running job uses it"}})
def delete_dataset(dataset_id: str, session: SessionDep, store: StoreDep, project: ProjectDep) -> Response:
    """Delete a dataset and its bytes (refused while a job still needs it)."""
    prefix = datasets.delete(session=session, project=project, dataset_id=dataset_id)
    session.commit()
    store.delete(prefix)
    return Response(status_code=204)


@router.get("/{dataset_id}/download", response_class=FileResponse, responses={
    404: {"description": "no such dataset"},
    410: {"description": "the dataset's file is missing from the blob store"},
    200: {"description": "the file as uploaded, byte for byte (its sha256 is the dataset's)",
          "content": {"application/octet-stream": {"schema": {"type": "string",
                                                               "format": "binary"}}}}})
def download_dataset(dataset_id: str, session: SessionDep, store: StoreDep,
                     project: ProjectDep) -> FileResponse:
    """The dataset's original file, streamed."""
    row = datasets.get(session=session, project=project, dataset_id=dataset_id)
    path = store.require(row.blob_key, what=f"dataset {row.id}", field="dataset_id")
    return FileResponse(path, media_type="application/octet-stream",
                        filename=f"{row.id}.{row.format}")


@router.get("/{dataset_id}/export.csv", response_class=StreamingResponse, responses={
    404: {"description": "no such dataset"},
    410: {"description": "the dataset's file is missing from the blob store"},
    422: {"description": "an image dataset: download its ZIP instead"},
    200: {"description": "the rows as CSV with a header; text cells that a spreadsheet would "
                         "run as a formula (= + - @) are prefixed with '",
          "content": {"text/csv": {"schema": {"type": "string"}}}}})
def export_dataset(dataset_id: str, session: SessionDep, store: StoreDep,
                   project: ProjectDep) -> StreamingResponse:
    """A tabular dataset's rows as CSV, safe to open in a spreadsheet."""
    row = datasets.get(session=session, project=project, dataset_id=dataset_id)
    if row.kind == "image":
        raise Invalid(f"dataset {row.id} holds images; GET /v1/datasets/{row.id}/download "
                      "returns its ZIP", errors=[{"field": "dataset_id", "message": "images"}])
    names = [c["name"] for c in row.columns]
    path = store.require(row.blob_key, what=f"dataset {row.id}", field="dataset_id")
    return StreamingResponse(csv_chunks(path, row.format, names),
                             media_type="text/csv; charset=utf-8", headers={
                                 "Content-Disposition": f'attachment; filename="{row.id}.csv"'})
