"""Model exports: built once per model and format, kept as a blob in the model's folder."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from app import storage
from app.ml import exporting
from app.services import models
from app.storage import BlobStore


def archive(*, session: Session, store: BlobStore, project: str, model_id: str,
            fmt: str) -> Path:
    """A local path of the model's export ZIP in fmt, built and stored on first request.

    NotFound for another project's or an unknown model; ExportRefused (naming the formats the
    model has) for a format it cannot be exported in. Two first requests racing both build;
    the first to publish wins and the other's identical bytes are dropped.
    """
    row = models.get(session=session, project=project, model_id=model_id)
    key = storage.export_key(row.id, fmt)
    if fmt in exporting.FORMATS and store.exists(key):
        return store.path(key)
    trained = models.load_trained(store=store, model_id=row.id, algorithm=row.algorithm,
                                  artifact_key=row.artifact_key)
    features = [str(f["name"]) for f in (row.input_schema or {}).get("features", [])]
    data = exporting.build(trained, fmt, model_id=row.id, features=features)
    try:
        with store.writer(key) as fh:
            fh.write(data)
    except FileExistsError:
        pass
    return store.path(key)


def filename(model_id: str, fmt: str) -> str:
    """The name a download of the archive is saved under."""
    return f"{model_id}.{fmt}.zip"
