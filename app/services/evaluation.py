"""Scoring a trained model on an uploaded test set: which rows, which labels, which columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.data import training
from app.data.features import FeatureError
from app.db.tables import Job, Model
from app.errors import field_error
from app.services import datasets
from app.storage import BlobStore


@dataclass
class TestSet:
    """The rows a model is scored on, their labels (None without a target) and where from."""

    x: Any
    y: np.ndarray | None
    n_rows: int
    target: str | None


def default_target(*, session: Session, model: Model) -> str | None:
    """The label column the model's training job named, if any."""
    job = session.get(Job, model.job_id)
    return job.target if job is not None else None


def load(*, session: Session, project: str, model: Model, dataset_id: str,
         target: str | None, store: BlobStore, max_rows: int) -> TestSet:
    """The dataset's rows as the model reads them, checked against its input schema.

    A tabular or text test set must hold every column the model was trained on (422 naming
    the missing ones); the target, when given (or named by the training job), must exist.
    """
    ds = datasets.get(session=session, project=project, dataset_id=dataset_id)
    if ds.n_rows is not None and ds.n_rows > max_rows:
        raise field_error(
            "dataset_id", "too many rows", status=413,
            detail=f"dataset {ds.id} has {ds.n_rows} rows; evaluate takes at most "
                   f"{max_rows} (PRETRAINER_EVALUATE_MAX_ROWS)")
    test_data = reading(session=session, project=project, model=model, dataset_id=dataset_id,
                        target=target)
    try:
        data = training.load(test_data, store.path)
    except FeatureError as exc:
        raise field_error(
            "dataset_id", exc.message,
            detail=exc.message) \
            from exc
    return TestSet(x=data.x, y=data.labels, n_rows=len(data.x), target=test_data.target)


def reading(*, session: Session, project: str, model: Model, dataset_id: str,
            target: str | None) -> training.JobData:
    """What reading a dataset's rows as the model reads them takes (evaluate, indexes), or
    the 422 that says why the dataset does not fit the model's input schema."""
    ds = datasets.get(session=session, project=project, dataset_id=dataset_id)
    schema = model.input_schema or {}
    kind = schema.get("kind", "tabular")
    data_kind = "image" if ds.kind == "image" else "tabular"
    if (kind == "image") != (data_kind == "image"):
        raise field_error("dataset_id", f"the model reads {kind} data; dataset {ds.id} holds "
                          f"{ds.kind} data")
    names = [c["name"] for c in ds.columns or []]
    features = _features(schema, kind)
    missing = [f for f in features if f not in names]
    if missing:
        raise field_error("dataset_id", f"dataset {ds.id} lacks the column(s) the model was "
                          f"trained on: {', '.join(missing)}")
    if kind == "image":
        target = None  # labels of images come from their class folders
    elif target is not None and target not in names:
        raise field_error("target", f'unknown column "{target}"; available: {", ".join(names)}')
    elif target is None:
        trained_on = default_target(session=session, model=model)
        target = trained_on if trained_on in names else None
    return training.of_job(ds, features=features, target=target)


def _features(schema: dict[str, Any], kind: str) -> list[str]:
    if kind == "text":
        return [schema["column"]]
    if kind == "tabular":
        return [f["name"] for f in schema.get("features", [])]
    return []
