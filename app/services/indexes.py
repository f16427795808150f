"""Nearest-neighbour indexes of a model's embeddings: create (row + job of kind "index"),
read, list, delete, and what a neighbours query needs to find the index to ask.

An index's status is its job's: queued, running, succeeded (the index is ready), failed or
cancelled. The worker's side is app.runs.index; the search itself app.serving.neighbors.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import storage
from app.config import Settings
from app.data import text
from app.data.training import JobData
from app.db.tables import (
    INDEX,
    SUCCEEDED,
    Dataset,
    Job,
    Model,
    NeighborIndex,
    new_id,
)
from app.errors import NotFound, field_error
from app.ml import registry
from app.ml.ann import IndexParams, Metric
from app.services import datasets, evaluation, jobs, models, page, quotas
from app.storage import BlobStore

# The dataset column whose values answer as each neighbour's `id` (compared case-insensitively).
ID_COLUMN = "id"


@dataclass(frozen=True)
class IndexSpec:
    """What a client asks for in POST /v1/models/{id}/indexes."""

    dataset_id: str
    metric: Metric | None = None  # None: the model's own (Trained.neighbor_metric)
    params: IndexParams | None = None
    label_column: str | None = None  # None: found (see _label_column)


@dataclass(frozen=True)
class IndexView:
    """An index row with its job's status, progress and error, as the API shows it."""

    row: NeighborIndex
    job: Job | None

    @property
    def status(self) -> str:
        return self.job.status if self.job is not None else "failed"


def create(*, session: Session, project: str, model_id: str, spec: IndexSpec,
           settings: Settings, store: BlobStore) -> IndexView:
    """Check the request, insert the index and its queued job, commit, then enqueue."""
    model = models.get(session=session, project=project, model_id=model_id)
    if "embed" not in (model.capabilities or []):
        raise field_error("model_id", f"a {model.algorithm} model cannot embed", detail=(
            f"model {model.id} ({model.algorithm}) does not embed rows, so it has no "
            "embeddings to index; index a model that can embed"))
    data = _reading(session, project, model, spec)
    quotas.check(session=session, project=project, defaults=settings.quota_defaults,
                 adding={"queued_jobs": 1})
    row, job = _insert(session, project, model, spec, data)
    for key, what, field in ((data.blob_key, f"dataset {data.dataset_id}", "dataset_id"),
                             (model.artifact_key, f"model {model.id}", "model_id")):
        store.require(key, what=what, field=field)  # a 410 now, not a failed job later
    session.commit()  # the rows exist before any worker can see the message
    jobs.enqueue(settings, job)
    return IndexView(row, job)


def _reading(session: Session, project: str, model: Model, spec: IndexSpec) -> JobData:
    """The dataset read as the model reads it, with the label column the answers quote."""
    ds = datasets.get(session=session, project=project, dataset_id=spec.dataset_id)
    names = [c["name"] for c in ds.columns or []]
    if spec.label_column is not None and spec.label_column not in names:
        raise field_error("label_column", f'unknown column "{spec.label_column}"; available: '
                          f'{", ".join(names)}')
    _same_image_size(model, ds)
    data = evaluation.reading(session=session, project=project, model=model,
                              dataset_id=ds.id, target=spec.label_column)
    if data.kind == "image" or data.target is not None:
        return data
    found = _label_column(ds, data.features)
    return evaluation.reading(session=session, project=project, model=model,
                              dataset_id=ds.id, target=found) if found else data


def _label_column(ds: Dataset, features: tuple[str, ...]) -> str | None:
    """A column named like a label (label, target, class, …) that the model does not read."""
    columns = [c for c in ds.columns or [] if c["name"] not in features]
    return text.label_column(columns, "")


def _same_image_size(model: Model, ds: Dataset) -> None:
    """An index reads the dataset's stored images as they are: they must be the model's size."""
    schema, image = model.input_schema or {}, (ds.details or {}).get("image")
    if schema.get("kind") != "image" or not image:
        return
    want = tuple(int(schema.get(k, 0)) for k in ("height", "width", "channels"))
    have = tuple(int(image.get(k, 0)) for k in ("height", "width", "channels"))
    if want != have:
        raise field_error("dataset_id", "images of another size", detail=(
            f"dataset {ds.id} holds {have[0]}x{have[1]}x{have[2]} images; model {model.id} "
            f"reads {want[0]}x{want[1]}x{want[2]}: upload the images at the model's size"))


def _insert(session: Session, project: str, model: Model, spec: IndexSpec,
            data: JobData) -> tuple[NeighborIndex, Job]:
    algo = registry.get(model.algorithm)
    params = spec.params or IndexParams()
    metric = spec.metric or algo.trained_cls.neighbor_metric
    index_id = new_id("idx")
    # The job carries what the worker needs besides the index row: the model's columns
    # (features) and the label column (target), read as at training.
    job = jobs.new_queued(
        project=project, kind=INDEX, source_model_id=model.id, dataset_id=data.dataset_id,
        algorithm=model.algorithm, family=model.family, queue=algo.queue,
        params={"index_id": index_id}, features=list(data.features), target=data.target,
        metrics={})
    row = NeighborIndex(id=index_id, project=project, model_id=model.id,
                        dataset_id=data.dataset_id, job_id=job.id, metric=metric,
                        params=params.model_dump(), id_column=_id_column(data),
                        label_column=data.target, blob_key=storage.index_key(model.id, index_id))
    session.add_all([job, row])
    session.flush()
    return row, job


def _id_column(data: JobData) -> str | None:
    """The dataset's column named id (any case), whose values answer as each row's id."""
    names = [c["name"] for c in data.columns]
    return next((n for n in names if n == ID_COLUMN), None) or next(
        (n for n in names if n.lower() == ID_COLUMN), None)


def get(*, session: Session, project: str, model_id: str, index_id: str) -> IndexView:
    """One index of the model, or NotFound."""
    models.get(session=session, project=project, model_id=model_id)
    row = session.get(NeighborIndex, index_id)
    if row is None or row.project != project or row.model_id != model_id:
        raise NotFound(f"index {index_id} of model {model_id} does not exist")
    return IndexView(row, session.get(Job, row.job_id))


def list_(*, session: Session, project: str, model_id: str, limit: int,
          offset: int) -> tuple[list[IndexView], int]:
    """A page of the model's indexes, newest first, and the total count."""
    models.get(session=session, project=project, model_id=model_id)
    rows, total = page(session, NeighborIndex, [NeighborIndex.project == project,
                                                NeighborIndex.model_id == model_id],
                       limit=limit, offset=offset)
    return [IndexView(r, session.get(Job, r.job_id)) for r in rows], total


def ready(*, session: Session, project: str, model_id: str,
          index_id: str | None) -> NeighborIndex:
    """The index a neighbours query asks: index_id, or the model's newest ready one.

    409 naming index_id when that index (or any, without index_id) is not ready yet.
    """
    if index_id is not None:
        view = get(session=session, project=project, model_id=model_id, index_id=index_id)
        if view.status != SUCCEEDED:
            raise field_error(
                "index_id", f"index is {view.status}", status=409,
                detail=f"index {index_id} is {view.status}, not ready: ask again when its "
                       f"job {view.row.job_id} has succeeded")
        return view.row
    models.get(session=session, project=project, model_id=model_id)
    row = session.scalars(
        select(NeighborIndex).join(Job, Job.id == NeighborIndex.job_id)
        .where(NeighborIndex.project == project, NeighborIndex.model_id == model_id,
               Job.status == SUCCEEDED)
        .order_by(NeighborIndex.created_at.desc(), NeighborIndex.id).limit(1)).first()
    if row is None:
        raise field_error(
            "index_id", "no ready index", status=409,
            detail=f"model {model_id} has no ready index: build one with POST "
                   f"/v1/models/{model_id}/indexes and ask when its job has succeeded")
    return row


def built(*, session: Session, index_id: str, n_rows: int, dim: int) -> None:
    """Record what the worker built: how many rows, how wide."""
    row = session.get(NeighborIndex, index_id)
    if row is not None:
        row.n_rows, row.dim = n_rows, dim
        session.flush()


def for_job(*, session: Session, job_id: str) -> NeighborIndex:
    """The index a job of kind "index" builds."""
    row = session.scalars(select(NeighborIndex).where(NeighborIndex.job_id == job_id)).first()
    if row is None:
        raise NotFound(f"job {job_id} builds no index (deleted before it ran)")
    return row


def delete(*, session: Session, project: str, model_id: str, index_id: str) -> str:
    """Delete an index's row (and cancel its job if it has not ended); return its blob key to
    remove after commit."""
    view = get(session=session, project=project, model_id=model_id, index_id=index_id)
    if view.job is not None:
        jobs.request_cancel(session=session, project=project, job_id=view.job.id)
    session.delete(view.row)
    session.flush()
    return view.row.blob_key


def forget_model(*, session: Session, project: str, model_id: str) -> str:
    """Delete the rows of a model's indexes (the model is being deleted) and cancel the builds
    still waiting or running; return the key of their blobs' folder to remove after commit."""
    for row in session.scalars(select(NeighborIndex).where(
            NeighborIndex.project == project, NeighborIndex.model_id == model_id)).all():
        jobs.request_cancel(session=session, project=project, job_id=row.job_id)
        session.delete(row)
    session.flush()
    return storage.model_indexes_key(model_id)

