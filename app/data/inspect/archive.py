"""ZIP inspection: a ZIP of PNG/JPEG images, decoded member by member into arrays written
next to the upload (app.data.images does the work and sets the limits' meaning)."""

from __future__ import annotations

from pathlib import Path

from app.data.formats import IngestError
from app.data.images import ImageError, ZipLimits, ingest_zip
from app.data.schema import DatasetInfo


def inspect_zip(path: Path, derived_dir: Path, limits: ZipLimits) -> DatasetInfo:
    """An image dataset's facts; its arrays are written into derived_dir."""
    try:
        found = ingest_zip(path, derived_dir, limits)
    except ImageError as exc:  # an archive that cannot be used is a refused upload
        raise IngestError(exc.message, kind=exc.kind) from exc
    return DatasetInfo("image", "zip", found.n_images, [], details=found.details())
