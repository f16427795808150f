"""Trained models: rows in the database, artifacts in the blob store."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import storage
from app.data import training
from app.data.training import JobData
from app.db.tables import ACTIVE, INDEX, Dataset, Job, Model, new_id
from app.errors import field_error
from app.ml import registry as algorithms
from app.ml import reproduce
from app.ml.base import Algorithm, BackboneRef, Trained
from app.ml.transfer.backbones import MODEL_PREFIX
from app.services import backbones, owned, page, registry
from app.storage import BlobStore


@dataclass(frozen=True)
class Origin:
    """Where a trained model comes from: its job, the job's project, dataset and params."""

    project: str
    job_id: str
    dataset_id: str
    params: dict[str, Any]


def publish(*, store: BlobStore, algo: Algorithm, trained: Trained, origin: Origin,
            input_schema: dict[str, Any], timing: dict[str, float],
            backbone: BackboneRef | None, record: dict[str, Any] | None = None) -> Model:
    """Store a trained model's artifact under a new model id and build its row; the caller
    records the row (or deletes the artifact when it may not).

    record: the reproducibility record's facts (params, seed, data, versions, device); the
    sha256 of each artifact file is added here, from the files as they are published.
    """
    model_id = new_id("mdl")
    key = storage.model_key(model_id)
    with store.staging_dir() as staged:
        trained.save(staged)
        hashes = reproduce.file_hashes(staged)
        store.publish(staged, key)
    metrics = {**json.loads(json.dumps(trained.metrics, default=float)), **timing}
    lineage = backbones.lineage(backbone, model_id=model_id, algorithm=algo.name,
                                job_id=origin.job_id,
                                dataset_id=origin.dataset_id) if backbone is not None else {}
    return Model(
        id=model_id, project=origin.project, algorithm=algo.name, family=algo.family,
        job_id=origin.job_id, dataset_id=origin.dataset_id, params=origin.params,
        input_schema=_answer_schema(input_schema, trained), capabilities=list(algo.capabilities),
        metrics=metrics, artifact_key=key, lineage=lineage,
        backbone_model_id=backbone.name if backbone is not None and backbone.source == "model"
        else None,
        reproducibility={**(record or {}), "artifact_sha256": hashes},
    )


def _answer_schema(schema: dict[str, Any], trained: Trained) -> dict[str, Any]:
    """The input schema a model answers by: a transfer model answers with its own classes
    (or values), not the training data's."""
    task = trained.task
    if task is None:
        return dict(schema)
    return {**schema, "classes": task.get("classes") or [], "head": task["head"]}


def get(*, session: Session, project: str, model_id: str) -> Model:
    """One model of the project, by id or registry reference (`name@version`, `name@alias`),
    or NotFound."""
    model_id = registry.resolve(session=session, project=project, ref=model_id)
    return owned(session, Model, model_id, project=project, what="model")


def list_(*, session: Session, project: str, limit: int, offset: int) -> tuple[list[Model], int]:
    """A page of the project's models, newest first, and the total count."""
    return page(session, Model, [Model.project == project], limit=limit, offset=offset)


def load_trained(*, store: BlobStore, model_id: str, algorithm: str,
                 artifact_key: str) -> Trained:
    """A model's trained object, read from its artifact folder (410 on model_id when the blob
    store lost the folder): how serving, exports, batch and index jobs all load a model."""
    path = store.require(artifact_key, what=f"model {model_id}", field="model_id")
    return algorithms.load_trained(algorithm, path)


def training_data(*, session: Session, model: Model) -> JobData | None:
    """What the model's job trained on, or None when its job or dataset was deleted."""
    job, dataset = session.get(Job, model.job_id), session.get(Dataset, model.dataset_id)
    if job is None or dataset is None:
        return None
    return training.of_job(dataset, features=job.features, target=job.target)


def dependants(*, session: Session, project: str, model_id: str) -> list[str]:
    """Models fine-tuned from this one, and active jobs that will load it (as their backbone,
    to score a dataset with it, or to rerun it). An index build is not one: the model's
    indexes go with it (their builds are cancelled)."""
    models = session.scalars(select(Model.id).where(Model.project == project,
                                                    Model.backbone_model_id == model_id)).all()
    active = session.scalars(select(Job).where(Job.project == project,
                                               Job.status.in_(ACTIVE))).all()
    spec = MODEL_PREFIX + model_id
    jobs = [j.id for j in active
            if (j.params or {}).get("backbone") == spec
            or (j.source_model_id == model_id and j.kind != INDEX)]
    return sorted(models) + jobs


def delete(*, session: Session, project: str, model_id: str) -> Model:
    """Delete a model's row unless a registry alias points at it, or other models or active
    jobs are built on it; return the row (its id to evict, its artifact key to remove after
    commit)."""
    row = get(session=session, project=project, model_id=model_id)
    model_id = row.id
    _refuse_if_aliased(session, row)
    using = dependants(session=session, project=project, model_id=model_id)
    if using:
        raise field_error(
            "model_id", "used as a backbone by "
                                + ", ".join(using), status=409,
            detail=f"model {model_id} is the backbone of {', '.join(using)}; delete those "
                   "first (or wait for the jobs to finish)")
    registry.model_deleted(session=session, project=project, model_id=model_id)
    session.delete(row)
    session.flush()
    return row


def _refuse_if_aliased(session: Session, row: Model) -> None:
    """A 409 naming the aliases that point at a version of this model: serving them must not
    start failing because a model went away under them."""
    held = registry.holding(session=session, project=row.project, model_id=row.id)
    if held:
        names = ", ".join(f"{h.name}@{h.alias} (version {h.version})" for h in held)
        raise field_error("model_id", f"aliased in the registry: {names}", status=409,
                          detail=f"model {row.id} is {names} in the registry; move or delete "
                                 "those aliases first")
