"""Pictures: GET /v1/jobs/{id}/plots/loss.png and /v1/models/{id}/plots/{embedding|confusion}.png."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Response

from app import plots
from app.api.deps import CacheDep, ProjectDep, SessionDep, StoreDep
from app.data import training
from app.data.training import Loaded
from app.db.tables import Model
from app.errors import Problem, field_error
from app.ml import registry
from app.services import jobs, models

router = APIRouter(tags=["plots"])
PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
             "description": "a PNG image"}}


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-cache"})


@router.get("/v1/jobs/{job_id}/plots/loss.png", response_class=Response, responses={
    **PNG, 404: {"description": "no such job"},
    409: {"description": "the job has no epochs (a scikit-learn job, or none finished yet)"}})
def job_loss_plot(job_id: str, session: SessionDep, project: ProjectDep) -> Response:
    """The job's loss per epoch (val_loss, and the GAN's d_loss / g_loss when present)."""
    job = jobs.get(session=session, project=project, job_id=job_id)
    if not job.history:
        epochs = registry.get(job.algorithm).trained_cls.trains_in_epochs
        why = (f"the job is {job.status} and no epoch has finished yet" if epochs
               else f"a {job.algorithm} job is not trained in epochs")
        raise field_error(
            "job", why, status=409,
            detail=f"no loss curve for job {job_id}: {why}")
    try:
        return _png(plots.loss_png(job.history, f"{job.algorithm} {job.id}"))
    except plots.NoPlot as exc:
        raise field_error(
            "job", str(exc), status=409,
            detail=f"no loss curve for job {job_id}: {exc}") from exc


@router.get("/v1/models/{model_id}/plots/{kind}.png", response_class=Response, responses={
    **PNG, 404: {"description": "no such model"},
    410: {"description": "the model's or its training dataset's files are missing from the blob store"},
    409: {"description": "the model has no such picture (a confusion matrix needs a classifier; "
                         "an embedding needs the training dataset)"}})
def model_plot(model_id: str, kind: Literal["embedding", "confusion"], session: SessionDep,
               store: StoreDep, cache: CacheDep, project: ProjectDep) -> Response:
    """`embedding`: a seeded sample of the training rows, embedded by the model, PCA to 2-D,
    coloured by label (or cluster); `confusion`: a classifier's confusion matrix."""
    row = models.get(session=session, project=project, model_id=model_id)
    if kind == "confusion":
        return _png(_confusion(row))
    return _png(_embedding(row, session, store, cache))


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


def _embedding(row: Model, session: Any, store: Any, cache: Any) -> bytes:
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


def _points(row: Model, trained: Any, x: np.ndarray, idx: np.ndarray) -> tuple[Any, str]:
    if "embed" in row.capabilities:
        return trained.embed(x), "embeddings"
    stored = getattr(trained, "training_embedding", None)
    if stored is not None:
        return np.asarray(stored)[idx], "embedding"
    return x, "inputs (it has no embedding)"


def _labels(row: Model, trained: Any, x: np.ndarray, idx: np.ndarray,
            loaded: Loaded) -> tuple[list[str] | None, str]:
    if loaded.labels is not None:  # class folders, or the job's target column
        return [str(v) for v in np.asarray(loaded.labels)[idx]], "label"
    if trained.predicts_clusters and "predict" in row.capabilities:
        return [str(v) for v in np.asarray(trained.predict(x)["predictions"])], "cluster"
    return None, ""

