"""The pictures of a job or model: which rows, labels and points each one draws (app.plots
draws them)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sqlalchemy.orm import Session

from app import plots
from app.data import training
from app.data.training import Loaded
from app.db.tables import Model
from app.errors import Problem, field_error
from app.ml import registry
from app.ml.base import Trained
from app.services import jobs, models
from app.serving.cache import ModelCache
from app.storage import BlobStore


def loss(*, session: Session, project: str, job_id: str) -> bytes:
    """The job's loss per epoch (val_loss, and the GAN's d_loss / g_loss when present);
    409 when it has no epoch to draw."""
    job = jobs.get(session=session, project=project, job_id=job_id)
    if not job.history:
        epochs = registry.get(job.algorithm).trained_cls.trains_in_epochs
        why = (f"the job is {job.status} and no epoch has finished yet" if epochs
               else f"a {job.algorithm} job is not trained in epochs")
        raise field_error(
            "job", why, status=409,
            detail=f"no loss curve for job {job_id}: {why}")
    try:
        return plots.loss_png(job.history, f"{job.algorithm} {job.id}")
    except plots.NoPlot as exc:
        raise field_error(
            "job", str(exc), status=409,
            detail=f"no loss curve for job {job_id}: {exc}") from exc


def of_model(*, session: Session, project: str, model_id: str,
             kind: Literal["embedding", "confusion"], store: BlobStore,
             cache: ModelCache) -> bytes:
    """`embedding`: a seeded sample of the training rows, embedded by the model, PCA to 2-D,
    coloured by label (or cluster); `confusion`: a classifier's confusion matrix."""
    row = models.get(session=session, project=project, model_id=model_id)
    if kind == "confusion":
        return _confusion(row)
    return _embedding(row, session, store, cache)


def _refuse(row: Model, why: str) -> Problem:
    return field_error(
        "kind", why, status=409,
        detail=f"model {row.id} ({row.algorithm}): {why}")


def _confusion(row: Model) -> bytes:
    metrics = row.metrics or {}
    # Without held-out rows the matrix is the training rows' one, named train_confusion_matrix.
    matrix = metrics.get("confusion_matrix", metrics.get("train_confusion_matrix"))
    if matrix is None or "classes" not in metrics:
        raise _refuse(row, f"{row.algorithm} models have no confusion matrix; only a classifier "
                           "(transfer on a class target) has one")
    try:
        return plots.confusion_png(matrix, [str(c) for c in metrics["classes"]],
                                   f"{row.algorithm} {row.id}")
    except plots.NoPlot as exc:
        raise _refuse(row, str(exc)) from exc


def _embedding(row: Model, session: Session, store: BlobStore, cache: ModelCache) -> bytes:
    data = models.training_data(session=session, model=row)
    if data is None:
        raise _refuse(row, f"its training dataset {row.dataset_id} was deleted; there are no "
                           "rows to embed")
    store.require(data.blob_key, what=f"dataset {data.dataset_id}", field="dataset_id")
    loaded = training.load(data, store.path)
    idx = plots.sample_rows(len(loaded.x))
    x = np.asarray(loaded.x[idx])
    trained = cache.load(row).trained
    points, what = _points(row, trained, x, idx)
    labels, legend = _labels(row, trained, x, idx, loaded)
    title = f"{row.algorithm}: {what} of {len(idx)} training rows"
    return plots.scatter_png(points, labels, title, legend)


def _points(row: Model, trained: Trained, x: np.ndarray, idx: np.ndarray) -> tuple[Any, str]:
    if "embed" in row.capabilities:
        return trained.embed(x), "embeddings"
    stored = getattr(trained, "training_embedding", None)
    if stored is not None:
        return np.asarray(stored)[idx], "embedding"
    return x, "inputs (it has no embedding)"


def _labels(row: Model, trained: Trained, x: np.ndarray, idx: np.ndarray,
            loaded: Loaded) -> tuple[list[str] | None, str]:
    if loaded.labels is not None:  # class folders, or the job's target column
        return [str(v) for v in np.asarray(loaded.labels)[idx]], "label"
    if trained.predicts_clusters and "predict" in row.capabilities:
        return [str(v) for v in np.asarray(trained.predict(x)["predictions"])], "cluster"
    return None, ""
