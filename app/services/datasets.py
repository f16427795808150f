"""Datasets: rows in the database, bytes in the blob store, and the one path from received
bytes to a dataset (a multipart upload or a completed resumable one)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import storage
from app.config import Settings
from app.data.export import csv_chunks
from app.data.inspect import inspect_file
from app.data.inspect.archive import ZipLimits
from app.db.tables import ACTIVE, Dataset, Job, new_id
from app.errors import Conflict, NotFound, field_error
from app.services import idempotency, owned, page, quotas
from app.storage import BlobStore

# The name a received file has in its staging folder until inspection gives it its format's.
STAGED_NAME = "data.upload"


@dataclass(frozen=True)
class Received:
    """An upload's bytes, staged in a folder: the client's file name, the dataset name it asked
    for, and the size and sha256 of the bytes."""

    filename: str | None
    name: str | None
    size: int
    sha256: str


# Streams the request body into the staged path, bounding it by the stored_bytes quota.
Receive = Callable[[Path, quotas.Quota], Awaitable[Received]]


def create(*, session: Session, project: str, dataset_id: str, fields: dict[str, Any]) -> Dataset:
    """Insert a dataset row whose bytes are already published."""
    row = Dataset(id=dataset_id, project=project, **fields)
    session.add(row)
    session.flush()
    return row


def get(*, session: Session, project: str, dataset_id: str) -> Dataset:
    """One dataset of the project, or NotFound."""
    return owned(session, Dataset, dataset_id, project=project, what="dataset")


def named(*, session: Session, project: str, dataset_id: str) -> Dataset:
    """The dataset a request body names (dataset_id), or a 422 on that field when the project
    has none of that id (the body is wrong, not the path)."""
    try:
        return get(session=session, project=project, dataset_id=dataset_id)
    except NotFound as exc:
        raise field_error("dataset_id", "no such dataset", detail=exc.detail) from exc


def stored_file(*, session: Session, store: BlobStore, project: str,
                dataset_id: str) -> tuple[Dataset, Path]:
    """A dataset and its file as uploaded, or Gone when the blob store lost it."""
    row = get(session=session, project=project, dataset_id=dataset_id)
    return row, _file(store, row)


def export_csv(*, session: Session, store: BlobStore, project: str,
               dataset_id: str) -> Iterator[bytes]:
    """A tabular dataset's rows as CSV chunks; an image dataset has its ZIP to download."""
    row = get(session=session, project=project, dataset_id=dataset_id)
    if row.kind == "image":
        raise field_error(
            "dataset_id", "images",
            detail=f"dataset {row.id} holds images; GET /v1/datasets/{row.id}/download "
                   "returns its ZIP")
    return csv_chunks(_file(store, row), row.format, [c["name"] for c in row.columns])


def _file(store: BlobStore, row: Dataset) -> Path:
    return store.require(row.blob_key, what=f"dataset {row.id}", field="dataset_id")


def list_(*, session: Session, project: str, limit: int, offset: int) -> tuple[list[Dataset], int]:
    """A page of the project's datasets, newest first, and the total count."""
    return page(session, Dataset, [Dataset.project == project], limit=limit, offset=offset)


def delete(*, session: Session, project: str, dataset_id: str) -> str:
    """Delete a dataset's row unless an active job needs it; return the blob prefix to remove after commit."""
    row = get(session=session, project=project, dataset_id=dataset_id)
    busy = session.scalars(
        select(Job.id).where(Job.dataset_id == dataset_id, Job.status.in_(ACTIVE))
    ).all()
    if busy:
        raise Conflict(f"dataset {dataset_id} is used by active jobs: {', '.join(busy)}; "
                       "cancel them or wait for them to finish")
    session.delete(row)
    session.flush()
    return storage.dataset_prefix(dataset_id)


async def upload(*, session: Session, store: BlobStore, settings: Settings, project: str,
                 key: str | None, receive: Receive) -> Dataset:
    """Receive an upload and make it a dataset (committed); with an Idempotency-Key, a retry
    gets the first upload's dataset and sends no bytes anywhere."""
    claim = idempotency.Claim[Dataset](
        session=session, project=project, route="datasets", key=idempotency.check_key(key),
        fingerprint=lambda row: row.sha256,
        load=lambda dataset_id: get(session=session, project=project, dataset_id=dataset_id),
        discard=lambda row: store.delete(storage.dataset_prefix(row.id)))

    async def receive_and_ingest() -> Dataset:
        # Quotas first: a project at its datasets quota sends no bytes; stored_bytes is checked
        # while the bytes stream in, and both again (with the real size) before the row is
        # written. The upload and anything derived from it (image arrays) are staged in one
        # folder and published together; the folder is removed on any error before that.
        stored = await anyio.to_thread.run_sync(
            lambda: _quota_room(session=session, project=project, settings=settings))
        async with store.staging_dir_async() as folder:
            got = await receive(folder / STAGED_NAME, stored)
            # An upload to S3 takes a while: not on the event loop.
            return await anyio.to_thread.run_sync(lambda: ingest(
                session=session, store=store, settings=settings, project=project,
                folder=folder, received=got))

    return (await idempotency.once_async(claim, receive_and_ingest)).resource


def ingest(*, session: Session, store: BlobStore, settings: Settings, project: str,
           folder: Path, received: Received) -> Dataset:
    """Inspect the file staged in folder, publish the folder and write the dataset's row
    (uncommitted): the one path from received bytes to a dataset, multipart or resumable."""
    staged = folder / STAGED_NAME
    info = inspect_file(staged, received.filename, derived_dir=folder,
                        zip_limits=_zip_limits(settings), max_columns=settings.max_dataset_columns)
    dataset_id = new_id("ds")
    key = storage.dataset_key(dataset_id, info.format)
    staged.rename(folder / PurePosixPath(key).name)
    name = (received.name or received.filename or dataset_id).strip()[:255] or dataset_id
    store.publish(folder, storage.dataset_prefix(dataset_id))
    try:
        # Both quotas again with the real size: other uploads may have landed meanwhile.
        quotas.check(session=session, project=project, defaults=settings.quota_defaults,
                     adding={"datasets": 1, "stored_bytes": received.size})
        return create(session=session, project=project, dataset_id=dataset_id, fields={
            "name": name, "kind": info.kind, "format": info.format, "n_rows": info.n_rows,
            "columns": [asdict(c) for c in info.columns], "size_bytes": received.size,
            "sha256": received.sha256, "blob_key": key, "details": info.details})
    except BaseException:
        store.delete(storage.dataset_prefix(dataset_id))
        raise


def _quota_room(*, session: Session, project: str, settings: Settings) -> quotas.Quota:
    """The project's stored_bytes quota, once its datasets quota has room for one more."""
    quotas.check(session=session, project=project, defaults=settings.quota_defaults,
                 adding={"datasets": 1}, locked=False)  # not held while the bytes stream
    return quotas.of(session=session, project=project, defaults=settings.quota_defaults,
                     name="stored_bytes")


def _zip_limits(settings: Settings) -> ZipLimits:
    """The ZIP limits of settings: app.data takes plain values, as it is used outside the API."""
    return ZipLimits(max_members=settings.max_zip_members,
                     max_uncompressed_bytes=settings.max_zip_uncompressed_bytes,
                     max_ratio=settings.max_zip_ratio, max_image_pixels=settings.max_image_pixels,
                     max_decoded_bytes=settings.max_dataset_decoded_bytes,
                     max_decoded_ratio=settings.max_dataset_decoded_ratio,
                     decoded_floor=settings.max_dataset_decoded_floor)
