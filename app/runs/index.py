"""An index job: embed a dataset with a model, chunk by chunk, into an HNSW graph, and store
it beside the model's artifact (storage.index_key) with the rows' ids and labels.

The rows are read as the model's training rows were (app.data.training), and embedded by the
model's own embed, the call /v1/models/{id}/embed answers with: a query embedded by the API
lands in the same space as the rows. Cancel is checked between chunks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from app import logs
from app.config import Settings
from app.data import training
from app.data.loaders import load_column
from app.data.training import JobData
from app.db.session import session_scope
from app.db.tables import Dataset, Model
from app.job_report import LeaseLost, set_deadline
from app.ml import ann
from app.ml.ann import AnnIndex, IndexParams
from app.ml.base import Trained
from app.services import indexes, leases, models
from app.services.leases import Lease
from app.storage import BlobStore

log = logs.get_logger("pretrainer.runner")


@dataclass(frozen=True)
class Plan:
    """What one index job builds: from which model and rows, how, and where it goes."""

    index_id: str
    key: str  # the index's blob key
    algorithm: str
    artifact_key: str  # the model's
    model_id: str
    data: JobData
    metric: ann.Metric
    params: IndexParams
    id_column: str | None


def run(settings: Settings, lease: Lease, report: Any, store: BlobStore) -> None:
    """Build the job's index and end the job succeeded, if this worker still holds it."""
    plan = _plan(settings, lease, report)
    report.progress(0.01)
    t0 = time.perf_counter()
    loaded = training.load(plan.data, store.path)
    trained = models.load_trained(store=store, model_id=plan.model_id,
                                  algorithm=plan.algorithm, artifact_key=plan.artifact_key)
    report.check()
    t1 = time.perf_counter()
    index = _embed_all(trained, loaded.x, plan, report, settings.index_chunk_rows)
    ids = load_column(store.path(plan.data.blob_key), plan.data.format, plan.id_column) \
        if plan.id_column else None
    _publish(store, plan, index, ids, loaded.labels)
    report.check()
    metrics = {"n_rows": len(index), "dim": index.dim, "load_seconds": round(t1 - t0, 4),
               "build_seconds": round(time.perf_counter() - t1, 4)}
    with session_scope(settings.resolved_database_url) as s:
        if not leases.complete(session=s, lease=lease, metrics=metrics, result_key=plan.key):
            store.delete(plan.key)  # the lease moved on: this try's index must go
            raise LeaseLost(lease.job_id)
        indexes.built(session=s, index_id=plan.index_id, n_rows=len(index), dim=index.dim)
    log.info("job.succeeded", job_id=lease.job_id, index_id=plan.index_id, rows=len(index))


def _plan(settings: Settings, lease: Lease, report: Any) -> Plan:
    with session_scope(settings.resolved_database_url) as s:
        job = leases.load_for_run(session=s, lease=lease)
        set_deadline(report, settings, job.started_at)
        row = indexes.for_job(session=s, job_id=job.id)
        model, dataset = s.get(Model, row.model_id), s.get(Dataset, row.dataset_id)
        if model is None or dataset is None:
            gone = f"model {row.model_id}" if model is None else f"dataset {row.dataset_id}"
            raise FileNotFoundError(f"{gone} was deleted before the index was built")
        data = training.of_job(dataset, features=job.features, target=job.target)
        return Plan(index_id=row.id, key=row.blob_key, algorithm=model.algorithm,
                    artifact_key=model.artifact_key, model_id=model.id, data=data,
                    metric="l2" if row.metric == "l2" else "cosine",
                    params=IndexParams.model_validate(row.params), id_column=row.id_column)


def _embed_all(trained: Trained, x: Any, plan: Plan, report: Any, chunk: int) -> AnnIndex:
    """Every row embedded and added to a new graph, a chunk at a time, with progress."""
    n = len(x)
    index: AnnIndex | None = None
    for start in range(0, n, chunk):
        vectors = np.asarray(trained.embed(x[start:start + chunk]))
        if index is None:
            index = AnnIndex.empty(int(vectors.shape[1]), metric=plan.metric, params=plan.params)
        index.add(vectors)
        report.progress(0.05 + 0.9 * min(n, start + chunk) / n)
        report.check()
    if index is None:
        raise ValueError(f"dataset {plan.data.dataset_id} has no rows to index")
    return index


def _publish(store: BlobStore, plan: Plan, index: AnnIndex, ids: np.ndarray | None,
             labels: np.ndarray | None) -> None:
    """Write the index folder in staging and move it under its key in one step."""
    store.delete(plan.key)  # what an earlier, lost try of this job may have published
    with store.staging_dir() as staged:
        index.save(staged)
        ann.save_rows(staged, ids=ids, labels=labels)
        store.publish(staged, plan.key)
