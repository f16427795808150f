"""The orphan sweep: blobs that no row refers to any more, older than a grace period, go."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.tables import ACTIVE, Dataset, Job, Model
from app.storage import (
    DATASETS,
    INDEXES,
    JOBS,
    MODELS,
    RESULTS,
    STAGING,
    BlobStore,
    entry_id,
)


def _live_ids(session: Session, table: type, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    column = table.id  # type: ignore[attr-defined]
    return set(session.scalars(select(column).where(column.in_(ids))))


def _resumable_jobs(session: Session, ids: list[str]) -> set[str]:
    # A queued or running job may resume from its checkpoint; an ended one never will.
    if not ids:
        return set()
    return set(session.scalars(select(Job.id).where(Job.id.in_(ids), Job.status.in_(ACTIVE))))


def unknown_to_this_database(*, session: Session, store: BlobStore) -> list[str]:
    """Dataset and model folders in the store when no row of this database names any of them
    (empty when the store is empty or any of them is known here)."""
    found: list[str] = []
    for prefix, table in ((DATASETS, Dataset), (MODELS, Model)):
        keys = [key for key, _ in store.children(prefix)]
        if _live_ids(session, table, [entry_id(key) for key in keys]):
            return []
        found += keys
    return found


def sweep(*, session: Session, store: BlobStore, grace_seconds: float) -> list[str]:
    """Remove orphaned blobs older than grace_seconds; return their keys.

    Orphans are what a crash leaves between a write and its commit: half-uploaded staging
    files, a dataset or model folder whose row was never written (or was deleted before its
    files), a checkpoint of a job that has ended or is gone, the result of a job that is gone,
    the indexes of a deleted model.
    """
    removed: list[str] = []
    kept_by: tuple[tuple[str, Callable[[list[str]], set[str]]], ...] = (
        (DATASETS, lambda ids: _live_ids(session, Dataset, ids)),
        (MODELS, lambda ids: _live_ids(session, Model, ids)),
        (JOBS, lambda ids: _resumable_jobs(session, ids)),
        (RESULTS, lambda ids: _live_ids(session, Job, ids)),
        # A model's indexes go with the model (indexes/<model id>).
        (INDEXES, lambda ids: _live_ids(session, Model, ids)),
        (STAGING, lambda ids: set()))
    for prefix, keep in kept_by:
        old = [(key, entry_id(key)) for key, age in store.children(prefix)
               if age > grace_seconds]
        alive = keep([name for _, name in old])
        for key, name in old:
            if name not in alive:
                store.delete(key)
                removed.append(key)
    return removed
